"""``wise-bench --track``: its figures are printed (never asserted), its code paths must run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from wise_dev import bench, bench_tracking


def test_track_bench_prints_stages_floors_and_memory(tiny_checkpoints, tmp_path, capsys) -> None:
    figures = tmp_path / "track.json"
    args = ["--track", "--track-frames", "6", "--warmup", "4", "--sizes", "64x48"]
    args += ["--device", "cpu", "--cache-dir", str(tiny_checkpoints.root), "--json", str(figures)]
    assert bench.main(args) == 0
    table = capsys.readouterr().out
    for stage in (*bench_tracking.STAGES, "total"):
        assert f" {stage} " in table
    (row,) = json.loads(figures.read_text())["tracking"]
    assert row["frames"] == 6 and row["size"] == "64x48" and row["fps"] > 0
    assert set(row["floors_ms"]) >= set(bench_tracking.STAGES)
    assert all(row["stage_ms"][s] > 0 for s in bench_tracking.STAGES)
    assert row["state_bytes"][0] == row["state_bytes"][1]  # memory bank already full


def test_track_bench_full_size_path_runs_scaled_down(tiny_checkpoints, monkeypatch, capsys) -> None:
    """``--track --full-size`` builds SAM2.1-Large with its memory from the published
    configuration, which only a GPU runs at speed: here the same code runs on the CPU with the
    widths and the input size scaled down, so the first GPU run does not find a broken path."""
    sam = copy.deepcopy(bench.SAM2_LARGE)
    sam["vision_config"]["backbone_config"].update(
        hidden_size=16, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2], global_attention_blocks=[3],
        image_size=[256, 256],
    )  # fmt: skip
    sam["vision_config"]["backbone_channel_list"] = [128, 64, 32, 16]
    sam["vision_config"]["backbone_feature_sizes"] = [[64, 64], [32, 32], [16, 16]]
    sam["vision_config"]["fpn_hidden_size"] = 128
    sam["prompt_encoder_config"].update(hidden_size=128, image_size=256)
    sam["mask_decoder_config"].update(hidden_size=128, mlp_dim=128, iou_head_hidden_dim=64)
    memory = dict(
        bench_tracking.SAM2_LARGE_MEMORY,
        image_size=256,
        memory_attention_hidden_size=128,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128,
        memory_attention_rope_feat_sizes=[16, 16],
        memory_encoder_hidden_size=128,
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=128,
    )
    monkeypatch.setattr(bench, "SAM2_LARGE", sam)
    monkeypatch.setattr(bench_tracking, "SAM2_LARGE_MEMORY", memory)
    args = ["--track", "--full-size", "--device", "cpu", "--dtype", "float32"]
    args += ["--track-frames", "3", "--warmup", "0", "--sizes", "64x48"]
    assert bench.main([*args, "--cache-dir", str(Path(tiny_checkpoints.root))]) == 0
    assert "sam2.1-large (random)" in capsys.readouterr().out
