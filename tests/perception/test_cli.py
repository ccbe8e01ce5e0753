"""The wise-segment CLI and the wise-bench benchmark, run in-process with the tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from wise_dev import bench
from wise_perception import cli
from wise_perception.image_files import ImageFileError, read_rgb
from wise_perception.pipeline import WisePipeline


def _refuse_loading(monkeypatch) -> None:
    """Loading a model would be a bug in these tests: the problem must be found before it."""

    def loading(*args, **kwargs):
        raise AssertionError("the models were loaded before the input was checked")

    monkeypatch.setattr(WisePipeline, "from_pretrained", loading)


def test_cli_writes_mask_overlay_and_json(
    taught_policy_dir, tiny_checkpoints, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    code = cli.main(
        [
            str(tiny_checkpoints.demo_image),
            "the red square",
            "--model",
            str(taught_policy_dir),
            "--segmenter",
            str(tiny_checkpoints.sam2),
            "--device",
            "cpu",
            "--max-new-tokens",
            "96",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("ok: 1 object(s)") and "#Tok" in summary and "\n" not in summary
    mask = cv2.imread(str(out / "demo_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 255}
    overlay = cv2.imread(str(out / "demo_overlay.png"))
    assert overlay.shape == (240, 320, 3)
    data = json.loads((out / "demo_result.json").read_text())
    assert data["status"] == "ok" and data["mask_pixels"] == int((mask == 255).sum())
    assert data["objects"][0]["box"] == [
        38,
        57,
        152,
        143,
    ]  # round(x * 320 / 840), round(y * 240 / 840)
    assert data["rationale"] == "the red square is on the left"


def test_cli_input_errors_exit_2_and_load_errors_exit_3(tiny_checkpoints, tmp_path, capsys) -> None:
    assert cli.main([str(tmp_path / "missing.png"), "the cup", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert cli.main([str(junk), "the cup"]) == 2
    assert "is not an image file" in capsys.readouterr().err
    assert cli.main([str(tiny_checkpoints.demo_image), "   "]) == 2
    assert "invalid command" in capsys.readouterr().err
    code = cli.main(
        [str(tiny_checkpoints.demo_image), "the cup", "--model", str(tmp_path / "nope")]
    )
    assert code == 3
    assert "could not load the models" in capsys.readouterr().err
    assert not list(tmp_path.glob("*_result.json"))


def test_cli_refuses_a_too_large_image_before_loading(tiny_checkpoints, tmp_path, capsys) -> None:
    # The model path does not exist: exit 2 (not 3) proves the image is checked first.
    code = cli.main(
        [
            str(tiny_checkpoints.demo_image),
            "the cup",
            "--model",
            str(tmp_path / "nope"),
            "--max-image-pixels",
            "1000",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "320x240 = 76800 pixels exceeds max_image_pixels=1000" in err and "--downscale" in err


def test_cli_downscale_maps_the_result_back(taught_policy_dir, tiny_checkpoints, tmp_path) -> None:
    out = tmp_path / "out"
    args = [str(tiny_checkpoints.demo_image), "the red square", "--model", str(taught_policy_dir)]
    args += ["--segmenter", str(tiny_checkpoints.sam2), "--device", "cpu", "--out", str(out)]
    assert cli.main([*args, "--max-image-pixels", str(160 * 120), "--downscale"]) == 0
    data = json.loads((out / "demo_result.json").read_text())
    assert data["image_size"] == [320, 240]
    mask = cv2.imread(str(out / "demo_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (240, 320)
    # The box of the 160x120 copy, scaled back: within a pixel or two of the full-size answer.
    assert np.allclose(data["objects"][0]["box"], [38, 57, 152, 143], atol=2)


def test_cli_failure_writes_full_size_mask_and_the_completion(
    tiny_policy_dir, tiny_checkpoints, tmp_path, capsys
) -> None:
    """The random policy writes junk: unparsable_answer (exit 1), but the outputs still say
    what the model wrote and have the image's size."""
    out = tmp_path / "out"
    args = [str(tiny_checkpoints.demo_image), "the red square", "--model", str(tiny_policy_dir)]
    args += ["--segmenter", str(tiny_checkpoints.sam2), "--device", "cpu", "--out", str(out)]
    assert cli.main([*args, "--max-new-tokens", "12"]) == 1
    data = json.loads((out / "demo_result.json").read_text())
    assert data["status"] == "unparsable_answer"
    assert data["image_size"] == [320, 240]
    assert data["completion"] and data["completion"] in capsys.readouterr().err
    mask = cv2.imread(str(out / "demo_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (240, 320) and not mask.any()


def test_cli_module_entry_point_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wise_perception.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "--max-new-tokens" in proc.stdout


def test_bench_runs_one_iteration(tiny_checkpoints, tmp_path, capsys) -> None:
    figures = tmp_path / "bench.json"
    code = bench.main(
        [
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--think-tokens",
            "2",
            "6",
            "--cache-dir",
            str(tiny_checkpoints.root),
            "--json",
            str(figures),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "640x480" in table and "1280x720" in table and "sam_encode" in table
    rows = json.loads(Path(figures).read_text())["rows"]
    per_engine = [("640x480", 2), ("1280x720", 2), ("640x480", 6), ("1280x720", 6)]
    # generate, engine, engine+schema
    assert [(r["size"], r["think_tokens"]) for r in rows] == 3 * per_engine
    assert all(r["stats"]["total"]["mean"] > 0 for r in rows)
    # One run times every engine available here, and each stage against its physical floor.
    assert "+generate" in table and "+engine" in table and "+engine+schema" in table
    # The engines generate the same completion (teacher-forced); the forced schema does it in
    # fewer sequential forwards.
    engine = [r for r in rows if r["model"].endswith("+engine")]
    schema = [r for r in rows if r["model"].endswith("+engine+schema")]
    for free, forced in zip(engine, schema, strict=True):
        assert free["generated_tokens"] == forced["generated_tokens"]
        assert forced["forward_passes"] < free["forward_passes"] == free["generated_tokens"]
    assert "physical floors on cpu" in table and "decode/step" in table
    floors = json.loads(Path(figures).read_text())["floors"]
    assert floors["decode_step_ms"] > 0 and floors["prefill_ms"] > 0 and floors["tflop_s"] > 0


def test_bench_full_size_path_runs_scaled_down(tiny_checkpoints, monkeypatch, capsys) -> None:
    """``--full-size`` builds its models from the published configs (and the real Qwen2.5
    tokenizer when built), which only a GPU can hold: here the same code runs on the CPU with
    the configs scaled down, so the first GPU run does not find a broken path."""
    import copy

    qwen = copy.deepcopy(bench.QWEN25_VL_7B)
    qwen["text_config"].update(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
    )
    qwen["vision_config"].update(
        depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
        fullatt_block_indexes=[1, 3],
    )  # fmt: skip
    sam = copy.deepcopy(bench.SAM2_LARGE)
    sam["vision_config"]["backbone_config"].update(
        hidden_size=16, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2], global_attention_blocks=[3],
    )  # fmt: skip
    sam["vision_config"]["backbone_channel_list"] = [128, 64, 32, 16]
    sam["vision_config"]["fpn_hidden_size"] = 32
    sam["prompt_encoder_config"]["hidden_size"] = 32
    sam["mask_decoder_config"].update(hidden_size=32, mlp_dim=64, iou_head_hidden_dim=32)
    monkeypatch.setattr(bench, "QWEN25_VL_7B", qwen)
    monkeypatch.setattr(bench, "SAM2_LARGE", sam)
    args = ["--full-size", "--device", "cpu", "--dtype", "float32", "-n", "1", "--warmup", "0"]
    args += ["--think-tokens", "4", "--sizes", "64x48", "--cache-dir", str(tiny_checkpoints.root)]
    assert bench.main([*args, "--engines", "generate", "engine+schema"]) == 0
    table = capsys.readouterr().out
    assert "qwen2.5-vl-7b+sam2-large+engine+schema" in table and "decode/step" in table


def test_an_out_that_is_a_file_exits_2_before_loading(
    tiny_checkpoints, tmp_path, capsys, monkeypatch
):
    _refuse_loading(monkeypatch)
    taken = tmp_path / "existing_file.png"
    taken.write_bytes(b"")
    assert cli.main([str(tiny_checkpoints.demo_image), "the cup", "--out", str(taken)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert taken.read_bytes() == b""  # nothing overwritten


def _jpeg(path: Path, image: np.ndarray, exif_orientation: int | None = None) -> Path:
    from PIL import Image

    picture = Image.fromarray(image)
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation  # the EXIF Orientation tag
    picture.save(path, format="JPEG", quality=95, exif=exif)
    return path


def test_a_truncated_jpeg_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    _refuse_loading(monkeypatch)
    rng = np.random.default_rng(0)
    whole = _jpeg(tmp_path / "whole.jpg", rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert read_rgb(whole).shape == (240, 320, 3)
    assert cli.main([str(cut), "the cup", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "cut.jpg" in err
    assert not (tmp_path / "out" / "cut_result.json").exists()


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide and 20 high, with the left half red; orientation 6 means "rotate 90
    # degrees clockwise to display": upright it is 20 wide, 40 high, red at the top.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    upright = read_rgb(_jpeg(tmp_path / "phone.jpg", stored, exif_orientation=6))
    assert upright.shape == (40, 20, 3)
    assert upright[:20, :, 0].mean() > 200 and upright[20:, :, 0].mean() < 50
    assert read_rgb(_jpeg(tmp_path / "plain.jpg", stored)).shape == (20, 40, 3)


def test_read_rgb_names_the_problem(tmp_path):
    (tmp_path / "folder").mkdir()
    for path, reason in (
        (tmp_path / "missing.png", "does not exist"),
        (tmp_path / "folder", "is not a file"),
    ):
        with pytest.raises(ImageFileError, match=reason) as caught:
            read_rgb(path)
        assert str(path) in str(caught.value)


def test_help_lists_the_exit_codes_and_prints_no_markup():
    text = cli.build_parser().format_help()
    assert "exit codes:" in text and "``" not in text
    for code in ("0", "1", "2", "3"):
        assert f"\n  {code}  " in text


def test_settings_out_of_range_exit_2_before_any_model_loads(tiny_checkpoints, tmp_path, capsys):
    # The real loading path: the settings are checked before a model is read, so these fail in
    # about the time of a torch import, with what to change.
    base = [str(tiny_checkpoints.demo_image), "the cup", "--out", str(tmp_path)]
    models = ["--model", str(tiny_checkpoints.policy), "--segmenter", str(tiny_checkpoints.sam2)]
    assert cli.main([*base, *models, "--max-new-tokens", "0"]) == 2
    assert "invalid setting: max_new_tokens must be positive" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert cli.main([*base, *models, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert cli.main([*base, *models, "--dtype", "fp8"]) == 2
    assert "unknown dtype" in capsys.readouterr().err
