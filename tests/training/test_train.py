"""Real GRPO steps (TRL GRPOTrainer) on the tiny Qwen2.5-VL with the core's WISE rewards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wise_perception.core.prompts import build_messages, spec_for
from wise_training.config import load_config
from wise_training.train import TRAINING_CONFIG_NAME, build_trainer, save_final

REPO = Path(__file__).resolve().parents[2]
GT_BOX = [100, 200, 400, 500]  # policy frame
ANSWER = '{"bbox": [100,200,400,500], "points_1": [200,300], "points_2": [300,400]}'
# Full task reward for GT_BOX: IoU 1, L1 0, both points inside and near the GT points.
TAUGHT = (
    "<think> the red square </think>"
    f"<answer>{ANSWER}</answer>"
    "<d_think> the red square is the only red object and it sits on the left of the gray image </d_think>"
)


@pytest.fixture(scope="module")
def wise_policy(teach_tiny):
    return teach_tiny(TAUGHT)


def run_train_cli(policy, run_dir, *extra, launcher=(), timeout=600):
    """``python [launcher] -m wise_training.train --config tiny_cpu`` on ``run_dir/train.jsonl``,
    writing to ``run_dir/out``, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".build" / "torch_extensions"))
    command = [
        sys.executable,
        *launcher,
        "-m",
        "wise_training.train",
        "--config",
        "tiny_cpu",
        f"model.path={policy}",
        f"data.train={run_dir / 'train.jsonl'}",
        f"trainer.output_dir={run_dir / 'out'}",
        *extra,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


def synthetic_samples(mode, n=4):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        image = np.full((840, 840, 3), 128, np.uint8)
        image[200:500, 100:400] = (255, 0, 0)
        image += rng.integers(0, 3, image.shape, dtype=np.uint8)
        samples.append(
            {
                "prompt": build_messages(f"the red square {i}", spec_for(mode)),
                "image": Image.fromarray(image),
                "gt_box": GT_BOX,
                "gt_points": [[200, 300], [300, 400]],
            }
        )
    return samples


def tiny_config(policy, out, *overrides):
    return load_config(
        "tiny_cpu",
        [
            f"model.path={policy}",
            f"trainer.output_dir={out}",
            "trainer.max_completion_length=160",
            *overrides,
        ],
    )


class Recorder:
    """Wraps a real reward function and keeps what it returned."""

    def __init__(self, func):
        self.func, self.values = func, []
        self.__name__ = func.__name__

    def __call__(self, **kwargs):
        out = self.func(**kwargs)
        self.values.extend(out)
        return out


def test_grpo_steps_with_wise_rewards(wise_policy, tmp_path):
    config = tiny_config(wise_policy, tmp_path / "run", "trainer.max_steps=2")
    trainer, _ = build_trainer(config, samples=synthetic_samples("wise_train"))
    recorders = {f.__name__: Recorder(f) for f in trainer.reward_funcs}
    trainer.reward_funcs = list(recorders.values())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    rec = {name: np.array(r.values) for name, r in recorders.items()}
    n = len(rec["iou_reward"])
    assert n == 2 * 4  # 2 steps x (4 completions per step)
    task = (
        rec["tag_format_reward"]
        + rec["json_format_reward"]
        + rec["iou_reward"]
        + rec["box_l1_reward"]
        + rec["points_reward"]
    )
    assert task.max() > 0, "the taught policy should earn task reward"
    distilled = rec["distill_reward"] > 0
    assert distilled.any(), "full-reward completions should earn the distillation reward"
    # Eq. 4 (release indicator): R_distill only where the box IoU > 0.5, i.e. the IoU term > 0.5.
    assert np.all(rec["iou_reward"][distilled] > 0.5)
    assert np.array_equal(rec["distill_earned"] > 0, distilled)
    assert np.all(rec["think_tokens"][rec["tag_format_reward"] > 0] > 0)

    logged = {k for entry in trainer.state.log_history for k in entry}
    for key in (
        "rewards/tag_format_reward/mean",
        "rewards/iou_reward/mean",
        "rewards/distill_reward/mean",
        "rewards/think_tokens/mean",
        "rewards/d_think_tokens/mean",
        "rewards/distill_earned/mean",
    ):
        assert key in logged, f"{key} not logged"
    metrics = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("rewards/distill_reward/mean" in m for m in metrics)
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed, "GRPO steps should update the policy"

    final = save_final(trainer, config)
    assert (final / "model.safetensors").is_file()
    saved = json.loads((final / TRAINING_CONFIG_NAME).read_text())
    assert saved["prompt"]["mode"] == "wise_train" and saved["reward"]["distill"] is True


def test_no_indicator_distils_failed_completions_too(wise_policy, tmp_path):
    config = tiny_config(
        wise_policy, tmp_path / "run", "trainer.max_steps=1", "reward.use_indicator=false"
    )
    samples = synthetic_samples("wise_train")
    for s in samples:
        s["gt_box"] = [600, 600, 800, 800]  # far from what the policy answers: IoU 0
    trainer, _ = build_trainer(config, samples=samples)
    recorders = {f.__name__: Recorder(f) for f in trainer.reward_funcs}
    trainer.reward_funcs = list(recorders.values())
    trainer.train()
    iou = np.array(recorders["iou_reward"].values)
    distill = np.array(recorders["distill_reward"].values)
    assert np.all(iou < 0.5)
    assert (distill > 0).any()  # Table 6 "w/o indicator": failed paths are distilled


def test_train_cli_runs_a_jsonl_dataset_end_to_end(wise_policy, tmp_path):
    image = np.full((240, 320, 3), 128, np.uint8)
    image[57:143, 38:152] = (255, 0, 0)
    Image.fromarray(image).save(tmp_path / "a.png")
    rows = [{"image": "a.png", "instruction": "the red square", "box": [38, 57, 152, 143]}] * 4
    rows.append({"image": "missing.png", "instruction": "x", "box": [0, 0, 1, 1]})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    proc = run_train_cli(
        wise_policy,
        tmp_path,
        "trainer.max_steps=1",
        "trainer.save_steps=1",
        "trainer.report_to=tensorboard",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (
        "skipping sample train.jsonl:5" in proc.stderr
        and "skipping sample train.jsonl:6" in proc.stderr
    )
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
    assert list((tmp_path / "out").rglob("events.out.tfevents*")), "TensorBoard events missing"
    assert (tmp_path / "out" / "checkpoint-1").is_dir()

    # Resume from the newest checkpoint and train one more step.
    resumed = run_train_cli(wise_policy, tmp_path, "trainer.max_steps=2", "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    # Run 1 logs step 1 twice (the step and the train summary). A resumed run starts at step 2,
    # so step 1 must not appear again; a run that restarted from scratch would log it once more.
    assert 2 in steps and steps.count(1) == 2


def test_train_cli_reports_config_errors(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "wise_training.train", "--config", "wise", "trainer.bogus=1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "bogus" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "wise_training.train", "--config", "wise", "data.train=/nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "/nope" in proc.stderr


@pytest.mark.slow
def test_deepspeed_zero2_single_process_on_cpu(wise_policy, tmp_path):
    """DeepSpeed ZeRO-2 through accelerate launch, one CPU process (gloo); JIT-compiles an op once."""
    image = np.full((240, 320, 3), 128, np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    rows = [{"image": "a.png", "instruction": "the red square", "box": [38, 57, 152, 143]}] * 8
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    proc = run_train_cli(
        wise_policy,
        tmp_path,
        "trainer.max_steps=2",
        "trainer.max_completion_length=32",
        launcher=(
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "wise_training/wise_training/accelerate/cpu_zero2.yaml",
        ),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "distributed: DEEPSPEED ZeRO-2" in proc.stderr
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
    metrics = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]
