"""export.py: trained checkpoint -> folder the pipeline (and the segment CLI) load with no settings;
manifest errors surface clearly, both from read_manifest and through the pipeline's loading path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support.training import run_module, train_tiny_cpu

from wise_dev.train_smoke import SMOKE_COMPLETION
from wise_perception.core.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ManifestError,
    config_hash,
    read_manifest,
)
from wise_training import export as ex
from wise_training.config import load_config

TRAINING_CONFIG = {
    "model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct",
    "learning_rate": 1e-6,
    "per_device_train_batch_size": 2,
    "prompt_mode": "wise_train",
    "reward_weights": {"semantic": 1.0, "concise": 0.5},
}


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
    return dst


class _Payload:
    """Runs a shell command when unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def _write_unsafe_pickle(folder: Path) -> None:
    torch.save({"weight": _Payload()}, folder / "pytorch_model.bin")


@pytest.fixture(scope="module")
def trained_checkpoint(
    eval_taught_policy_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The taught tiny policy dressed as a training run's ``output_dir/final``."""
    final = _copy_checkpoint(eval_taught_policy_dir, tmp_path_factory.mktemp("run") / "final")
    (final / ex.TRAINING_CONFIG_NAME).write_text(json.dumps(TRAINING_CONFIG))
    return final


@pytest.fixture(scope="module")
def export_dir(
    trained_checkpoint: Path, tiny_sam2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("export") / "wise-tiny-s"
    code = ex.main(
        [
            "--checkpoint",
            str(trained_checkpoint),
            "--out",
            str(out),
            "--segmenter",
            str(tiny_sam2_dir),
            "--max-new-tokens",
            "96",
        ]
    )
    assert code == 0
    return out


def test_export_writes_manifest_weights_and_processor(
    export_dir: Path, tiny_sam2_dir: Path
) -> None:
    from transformers import AutoProcessor, ProcessorMixin

    manifest = read_manifest(export_dir)
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.prompt_mode == "wise_s" and manifest.brevity == "one sentence"
    assert manifest.answer_schema == "single" and manifest.policy_frame == 840
    assert manifest.segmenter == str(tiny_sam2_dir) and manifest.max_new_tokens == 96
    assert manifest.training_config == TRAINING_CONFIG
    assert manifest.training_config_sha256 == config_hash(TRAINING_CONFIG)
    assert manifest.base_model == "Qwen/Qwen2.5-VL-7B-Instruct"
    on_disk = sorted(
        p.relative_to(export_dir).as_posix()
        for p in export_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )
    assert list(manifest.files) == on_disk
    assert "model.safetensors" in on_disk and ex.TRAINING_CONFIG_NAME in on_disk
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in on_disk)
    assert isinstance(AutoProcessor.from_pretrained(export_dir), ProcessorMixin)
    # No staging folders left behind.
    assert [p.name for p in export_dir.parent.iterdir()] == [export_dir.name]


def test_export_is_readable_by_other_users_as_the_umask_allows(export_dir: Path) -> None:
    """mkdtemp makes 0700 folders and safetensors 0600 files; the export must not stay so."""
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(export_dir.stat().st_mode) == 0o777 & ~umask
    for path in export_dir.rglob("*"):
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == want, path.name


def test_export_keeps_the_weights(export_dir: Path, trained_checkpoint: Path) -> None:
    from safetensors.torch import load_file

    before, after = (
        load_file(trained_checkpoint / "model.safetensors"),
        load_file(export_dir / "model.safetensors"),
    )
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_exported_folder_loads_with_no_other_settings(export_dir: Path, tiny_checkpoints) -> None:
    from PIL import Image

    from wise_perception.pipeline import WisePipeline

    image = np.asarray(Image.open(tiny_checkpoints.demo_image).convert("RGB"))
    pipeline = WisePipeline.from_pretrained(policy=str(export_dir), device="cpu", dtype="float32")
    try:
        result = pipeline.segment(image, "the red square")
    finally:
        pipeline.close()
    assert result.status.value == "ok", result.error
    assert result.mask is not None and result.mask.shape == image.shape[:2]
    assert result.reasoning_tokens > 0 and result.rationale


def test_segment_cli_runs_on_export(export_dir: Path, tiny_checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = run_module(
        "wise_perception.cli",
        tiny_checkpoints.demo_image,
        "the red square",
        "--model",
        export_dir,
        "--segmenter",
        tiny_checkpoints.sam2,
        "--out",
        out,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem = tiny_checkpoints.demo_image.stem
    data = json.loads((out / f"{stem}_result.json").read_text())
    assert data["status"] == "ok", data
    assert data["mode"] == "wise_s" and data["reasoning_tokens"] > 0
    assert (out / f"{stem}_mask.png").is_file()


@pytest.fixture(scope="module")
def wise_train_export(
    teach_tiny, tiny_sam2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A checkpoint that writes the training format <think><answer><d_think> (as a WISE run's
    final does), exported in the default mode, wise_s, with room for the whole completion."""
    final = _copy_checkpoint(
        teach_tiny(SMOKE_COMPLETION), tmp_path_factory.mktemp("wise_train_run") / "final"
    )
    (final / ex.TRAINING_CONFIG_NAME).write_text(json.dumps(load_config("tiny_cpu").to_dict()))
    out = tmp_path_factory.mktemp("export_wise_train") / "wise-tiny-s"
    manifest = ex.export(final, out, segmenter=str(tiny_sam2_dir), max_new_tokens=128)
    assert manifest.prompt_mode == "wise_s"
    return out


def test_exported_wise_train_checkpoint_stops_at_the_answer_except_in_wise_f(
    wise_train_export: Path, tiny_checkpoints
) -> None:
    """§3.3: served in wise/wise_s, a WISE checkpoint omits <d_think>: generation ends right
    after </answer> (no detailed_rationale, fewer tokens); wise_f still writes it."""
    from PIL import Image

    from wise_perception.pipeline import WisePipeline

    image = np.asarray(Image.open(tiny_checkpoints.demo_image).convert("RGB"))
    results = {}
    for mode in ("wise_s", "wise", "wise_f"):
        with WisePipeline.from_pretrained(
            policy=str(wise_train_export), device="cpu", dtype="float32", mode=mode
        ) as pipeline:
            results[mode] = pipeline.segment(image, "the red square")
    full = results["wise_f"]
    assert full.status.value == "ok", full.error
    assert full.completion == SMOKE_COMPLETION  # the checkpoint does write the d_think
    assert full.detailed_rationale.startswith("the red square is the only red object")
    answer_end = SMOKE_COMPLETION.index("</answer>") + len("</answer>")
    for mode in ("wise_s", "wise"):
        short = results[mode]
        assert short.status.value == "ok" and short.mode == mode, short.error
        assert short.completion == SMOKE_COMPLETION[:answer_end], short.completion
        assert "<d_think>" not in short.completion and short.detailed_rationale == ""
        assert short.to_dict()["detailed_rationale"] == ""
        assert short.rationale == full.rationale == "the red square"
        assert short.generated_tokens < full.generated_tokens


def test_pickle_checkpoint_is_exported_only_when_weights_only_loads(
    trained_checkpoint: Path, tmp_path: Path, tiny_sam2_dir: Path
) -> None:
    from safetensors.torch import load_file

    pickled = _copy_checkpoint(trained_checkpoint, tmp_path / "pickled")
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    manifest = ex.export(pickled, tmp_path / "out", segmenter=str(tiny_sam2_dir))
    assert "model.safetensors" in manifest.files
    assert not any(f.endswith(".bin") for f in manifest.files)

    _write_unsafe_pickle(pickled)
    with pytest.raises(ex.ExportError, match="weights_only=True"):
        ex.export(pickled, tmp_path / "out2", segmenter=str(tiny_sam2_dir))
    assert not (tmp_path / "out2").exists()


def test_tokenizer_only_checkpoint_needs_a_processor(
    trained_checkpoint: Path, tmp_path: Path, tiny_policy_dir: Path
) -> None:
    from transformers import AutoProcessor, ProcessorMixin

    bare = _copy_checkpoint(trained_checkpoint, tmp_path / "bare")
    for name in ("processor_config.json", "preprocessor_config.json"):
        (bare / name).unlink(missing_ok=True)
    code = ex.main(["--checkpoint", str(bare), "--out", str(tmp_path / "o1")])
    assert code == 2
    assert (
        ex.main(
            [
                "--checkpoint",
                str(bare),
                "--out",
                str(tmp_path / "o2"),
                "--processor",
                str(tiny_policy_dir),
            ]
        )
        == 0
    )
    assert isinstance(AutoProcessor.from_pretrained(tmp_path / "o2"), ProcessorMixin)


def test_training_config_fallback_and_defaults(
    eval_taught_policy_dir: Path, tmp_path: Path
) -> None:
    ckpt = _copy_checkpoint(eval_taught_policy_dir, tmp_path / "ckpt")
    yaml_config = tmp_path / "tiny.yaml"
    yaml_config.write_text("model_name_or_path: tiny/base\nlearning_rate: 0.001\n")
    manifest = ex.export(
        ckpt, tmp_path / "a", training_config=yaml_config, mode="wise", brevity="within 10 words"
    )
    assert manifest.training_config == {"model_name_or_path": "tiny/base", "learning_rate": 0.001}
    assert manifest.base_model == "tiny/base" and manifest.prompt_mode == "wise"
    assert manifest.segmenter == "facebook/sam2-hiera-large"
    # No training config anywhere: exported, with an empty record and no hash.
    manifest = ex.export(ckpt, tmp_path / "b", base_model="my/base")
    assert manifest.training_config == {} and manifest.training_config_sha256 == ""
    assert manifest.base_model == "my/base"


def test_export_errors_exit_2(tmp_path: Path, trained_checkpoint: Path, capsys) -> None:
    missing = tmp_path / "missing"
    assert ex.main(["--checkpoint", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert ex.main(["--checkpoint", str(no_weights), "--out", str(tmp_path / "o")]) == 2
    assert "holds no weights" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ex.main(["--checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no config.json" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert ex.main(["--checkpoint", str(trained_checkpoint), "--out", str(occupied)]) == 2
    assert "--force" in capsys.readouterr().err and (occupied / "keep.txt").is_file()
    for bad in (["--policy-frame", "800"], ["--mode", "wise_s", "--brevity", "  "]):
        args = ["--checkpoint", str(trained_checkpoint), "--out", str(tmp_path / "x"), *bad]
        assert ex.main(args) == 2, bad
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- manifest errors


def _broken_copies(export_dir: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Copies of a good export, each broken one way, with the message expected."""
    cases: dict[str, tuple[Path, str]] = {}

    def copy(name: str) -> tuple[Path, dict]:
        folder = root / name
        shutil.copytree(export_dir, folder)
        return folder, json.loads((folder / MANIFEST_NAME).read_text())

    folder, data = copy("newer")
    data["format_version"] = FORMAT_VERSION + 1
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    cases["newer"] = (folder, "upgrade wise_perception")

    folder, _ = copy("malformed")
    (folder / MANIFEST_NAME).write_text('{"format_version": 1, "prompt_mode": ')
    cases["malformed"] = (folder, "not valid JSON")

    folder, data = copy("bad_mode")
    data["prompt_mode"] = "think_harder"
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    cases["bad_mode"] = (folder, "malformed")

    folder, _ = copy("missing_file")
    (folder / "model.safetensors").unlink()
    cases["missing_file"] = (folder, "missing")

    folder, _ = copy("no_manifest")
    (folder / MANIFEST_NAME).unlink()
    cases["no_manifest"] = (folder, "does not exist")
    return cases


@pytest.fixture(scope="module")
def broken_exports(
    export_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, str]]:
    return _broken_copies(export_dir, tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("case", ["newer", "malformed", "bad_mode", "missing_file", "no_manifest"])
def test_read_manifest_errors(broken_exports, case: str) -> None:
    folder, message = broken_exports[case]
    with pytest.raises(ManifestError, match=message):
        read_manifest(folder)


@pytest.mark.parametrize("case", ["newer", "malformed", "missing_file"])
def test_pipeline_refuses_broken_exports(broken_exports, case: str) -> None:
    from wise_perception.pipeline import WisePipeline

    folder, message = broken_exports[case]
    with pytest.raises(ManifestError, match=message):
        WisePipeline.from_pretrained(policy=str(folder), device="cpu", dtype="float32")


# --------------------------------------------------------------------------- train -> export -> load


@pytest.mark.slow
def test_train_one_step_then_export_and_load(
    eval_taught_policy_dir: Path, tiny_checkpoints, tmp_path: Path
) -> None:
    """A real GRPO step (tiny_cpu config, subprocess), then export and load with no settings."""
    from PIL import Image

    from wise_perception.pipeline import WisePipeline

    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "image": str(tiny_checkpoints.demo_image),
                    "instruction": q,
                    "box": [120, 80, 199, 159],
                }
            )
            + "\n"
            for q in ("the red square", "the red box", "the square in the middle", "the red thing")
        )
    )
    run = tmp_path / "run"
    proc = train_tiny_cpu(eval_taught_policy_dir, data, run, "trainer.max_steps=1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = run / "final"
    trained_config = json.loads((final / ex.TRAINING_CONFIG_NAME).read_text())
    out = tmp_path / "export"
    assert (
        ex.main(
            [
                "--checkpoint",
                str(final),
                "--out",
                str(out),
                "--segmenter",
                str(tiny_checkpoints.sam2),
            ]
        )
        == 0
    )
    manifest = read_manifest(out)
    assert manifest.training_config == json.loads(json.dumps(trained_config, sort_keys=True))
    assert manifest.training_config_sha256 == config_hash(trained_config)
    assert manifest.base_model == str(eval_taught_policy_dir)  # the config's model.path
    assert "training_args.bin" not in manifest.files  # TRL's pickle is not part of the export
    image = np.asarray(Image.open(tiny_checkpoints.demo_image).convert("RGB"))
    with WisePipeline.from_pretrained(policy=str(out), device="cpu", dtype="float32") as pipeline:
        result = pipeline.segment(image, "the red square")
    assert result.status.value == "ok", result.error
    assert result.mask is not None and result.mask.shape == image.shape[:2]


def test_training_loads_a_checkpoint_as_the_export_does(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    """One loader: training and inference refuse the pickle the export refuses, and load the
    same folder."""
    from wise_perception.policy.loader import CheckpointError
    from wise_perception.policy.transformers.backend import TransformersPolicy
    from wise_training.train import load_trainable_policy

    model, processor = load_trainable_policy(
        load_config("tiny_cpu", [f"model.path={trained_checkpoint}"])
    )
    assert processor.tokenizer.padding_side == "left" and model.dtype == torch.float32

    pickled = _copy_checkpoint(trained_checkpoint, tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    _write_unsafe_pickle(pickled)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_trainable_policy(load_config("tiny_cpu", [f"model.path={pickled}"]))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        TransformersPolicy.from_pretrained(pickled, device="cpu")
    served = TransformersPolicy.from_pretrained(trained_checkpoint, device="cpu")
    assert type(served.model) is type(model)
