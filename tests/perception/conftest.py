"""Fixtures of the pipeline, CLI and backend tests: taught tiny policies and loaded pipelines.

Everything is built once per session (and, with ``WISE_TINY_CACHE`` set, taught policies are
reused across sessions too). ``taught_policy_dir`` is meant for other test packages as well.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

# The completion the taught policy emits for every image and instruction (840x840 frame).
TAUGHT_COMPLETION = (
    "<think> the red square is on the left </think>"
    '<answer>{"bbox": [100,200,400,500], "points_1": [200,300], "points_2": [300,400]}</answer>'
)
# Two objects in VisionReasoner's multi-object schema.
TAUGHT_MULTI_COMPLETION = (
    "<think> two boxes </think>"
    '<answer>[{"bbox_2d": [10,20,300,400], "point_2d": [150,210]}, '
    '{"bbox_2d": [500,560,780,800], "point_2d": [640,690]}]</answer>'
)


def _taught(base: Path, completion: str, factory: pytest.TempPathFactory, name: str) -> Path:
    from wise_perception.testing import teach

    cache = os.environ.get("WISE_TINY_CACHE")
    if cache:
        source = Path(teach.__file__).read_bytes() + (base / "model.safetensors").read_bytes()
        digest = hashlib.sha256(source + completion.encode()).hexdigest()[:16]
        out = Path(cache) / f"taught_{digest}"
    else:
        out = factory.getbasetemp() / name
    done = out / ".taught"
    if not done.is_file():
        if out.exists():
            shutil.rmtree(out)
        teach.teach_policy(base, out, completion)
        done.write_text(completion)
    return out


@pytest.fixture(scope="session")
def taught_policy_dir(tiny_checkpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Qwen2.5-VL taught to answer ``TAUGHT_COMPLETION`` to everything (greedy)."""
    return _taught(tiny_checkpoints.policy, TAUGHT_COMPLETION, tmp_path_factory, "taught_policy")


@pytest.fixture(scope="session")
def taught_multi_policy_dir(tiny_checkpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Qwen2.5-VL taught to answer the two-object ``TAUGHT_MULTI_COMPLETION``."""
    return _taught(tiny_checkpoints.policy, TAUGHT_MULTI_COMPLETION, tmp_path_factory, "taught_multi_policy")


@pytest.fixture(scope="session")
def taught_pipeline(taught_policy_dir: Path, tiny_sam2_dir: Path):
    """The real pipeline (taught tiny policy + tiny SAM2 on CPU), loaded once."""
    from wise_perception.pipeline import WisePipeline

    pipeline = WisePipeline.from_pretrained(
        taught_policy_dir, tiny_sam2_dir, device="cpu", dtype="float32", max_new_tokens=96
    )
    yield pipeline
    pipeline.close()


@pytest.fixture(scope="session")
def random_pipeline(tiny_policy_dir: Path, tiny_sam2_dir: Path):
    """The real pipeline with the untaught (random, junk-writing) tiny policy."""
    from wise_perception.pipeline import WisePipeline

    pipeline = WisePipeline.from_pretrained(
        tiny_policy_dir, tiny_sam2_dir, device="cpu", dtype="float32", max_new_tokens=24
    )
    yield pipeline
    pipeline.close()
