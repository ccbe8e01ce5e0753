"""Training's outputs for people and tools: one run per metrics.jsonl, a readable console line
per logging step, and the training-curves plot."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from support.eval_data import check_png

from wise_training import curves
from wise_training.callbacks import JsonlLogCallback, log_line


def _state(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, is_world_process_zero=True, max_steps=4)


def test_a_new_run_starts_metrics_afresh_and_a_resumed_one_keeps_its_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = JsonlLogCallback(path)
    first.on_train_begin(None, _state(0), None)
    for step in (1, 2, 3):
        first.on_log(None, _state(step), None, logs={"reward": float(step)})
    again = JsonlLogCallback(path)  # a second run into the same folder
    again.on_train_begin(None, _state(0), None)
    again.on_log(None, _state(1), None, logs={"reward": 9.0})
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1]
    for step in (2, 3):
        again.on_log(None, _state(step), None, logs={"reward": 9.0})
    resumed = JsonlLogCallback(path)  # resumed from checkpoint-2: step 3 is logged again
    resumed.on_train_begin(None, _state(2), None)
    resumed.on_log(None, _state(3), None, logs={"reward": 7.0})
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["reward"] == 7.0


def test_log_line_reads_as_the_runs_quantities():
    logs = {
        "reward": 3.456,
        "rewards/iou_reward/mean": 0.7,
        "rewards/box_l1_reward/mean": 0.1,
        "rewards/points_reward/mean": 0.9,
        "rewards/tag_format_reward/mean": 1.0,
        "rewards/json_format_reward/mean": 1.0,
        "rewards/distill_reward/mean": 0.31,
        "rewards/distill_earned/mean": 0.625,
        "rewards/think_tokens/mean": 41.25,
        "rewards/d_think_tokens/mean": 88.0,
        "kl": 0.0021,
        "loss": 0.01,
    }
    line = log_line(12, 150, logs, 2.34)
    assert line.startswith("step 12/150  reward 3.46  acc 1.70  fmt 2.00")
    assert "distill 0.31 (earned 62%)" in line and "think 41.2" in line and "d_think 88.0" in line
    assert line.endswith("kl 0.0021  2.3 s/step") and "\n" not in line
    seg_zero = log_line(1, 2, {"reward": 1.0, "rewards/think_tokens/mean": 9.0,
                               "rewards/d_think_tokens/mean": 0.0}, 1.0)  # fmt: skip
    assert "distill" not in seg_zero and "d_think" not in seg_zero
    sft = log_line(10, 20, {"loss": 1.5, "mean_token_accuracy": 0.6}, 0.5)
    assert "loss 1.5000" in sft and "token accuracy 0.600" in sft


def test_training_curves_of_several_runs(tmp_path, capsys):
    for name, think in (("seg_zero", 60.0), ("wise", 20.0)):
        run = tmp_path / name
        run.mkdir()
        rows = [
            {
                "step": s,
                "reward": 2.0 + s / 10,
                "rewards/think_tokens/mean": think - s,
                "rewards/iou_reward/mean": 0.5,
                **({"rewards/distill_earned/mean": 0.5} if name == "wise" else {}),
            }
            for s in range(1, 11)
        ]
        rows.append({"step": 10, "train_runtime": 5.0})  # the end-of-run summary has no reward
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = curves.read_metrics(tmp_path / "wise")
    assert len(records) == 10
    assert curves.panel_values(records, ("think_tokens",))[0] == 19.0
    seg_zero = curves.read_metrics(tmp_path / "seg_zero")
    assert curves.panel_values(seg_zero, ("distill_earned",)) is None  # not logged: no line
    out = tmp_path / "curves.png"
    assert (
        curves.main([str(tmp_path / "seg_zero"), f"W={tmp_path / 'wise'}", "--out", str(out)]) == 0
    )
    check_png(out)
    with pytest.raises(SystemExit) as exc:
        curves.main([str(tmp_path / "missing"), "--out", str(out)])
    assert exc.value.code == 2 and "error" in capsys.readouterr().err
