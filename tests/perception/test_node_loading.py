"""The node's model factory: empty parameters defer to an exported checkpoint's manifest."""

import shutil

from wise_perception.core.manifest import Manifest, write_manifest
from wise_perception.node import PARAMETERS, Settings, load_pipeline


def settings(**values):
    return Settings({**{p.name: p.default for p in PARAMETERS}, **values})


def test_empty_mode_and_brevity_take_the_manifest(taught_policy_dir, tiny_sam2_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(taught_policy_dir, export)
    write_manifest(
        export,
        Manifest(prompt_mode="wise", brevity=None, segmenter=str(tiny_sam2_dir), max_new_tokens=77),
    )
    pipeline = load_pipeline(settings(policy_model=str(export), device="cpu", dtype="float32"))
    try:
        assert pipeline.config.mode == "wise"
        assert pipeline.config.max_new_tokens == 77
    finally:
        pipeline.close()
    explicit = load_pipeline(
        settings(policy_model=str(export), device="cpu", dtype="float32", mode="seg_zero")
    )
    try:
        assert explicit.config.mode == "seg_zero"  # an explicit parameter wins
    finally:
        explicit.close()
