"""CPU smoke run of WISE training, offline, that shows non-zero rewards and the distillation term.

    python -m wise_dev.train_smoke --out .build/smoke          # what `make train-smoke` runs

No Qwen2.5-VL-7B can be had offline, so a stand-in policy is used: the tiny random-weight
Qwen2.5-VL of ``wise_dev.tiny_models`` (real classes, real processor and chat
template), taught on the CPU with ``wise_dev.teach.teach_policy`` to answer
``SMOKE_COMPLETION`` in the training format ``<think> -> <answer> -> <d_think>`` (§3.2, Eq. 2).
Its ``<d_think>`` is longer than its ``<think>``, so S_concise > 0 (Eq. 7). Steps:

1. build the tiny models into ``OUT/tiny`` (skipped with ``--policy``);
2. teach the policy into ``OUT/policy`` (skipped when already there, or with ``--policy``);
3. write a synthetic dataset into ``OUT/data`` (``wise_training.data.synth_dataset``) whose
   objects sit where the taught policy answers, in images of several sizes;
4. train with the ``tiny_cpu`` config (real TRL ``GRPOTrainer`` steps, sampling at temperature
   1, TensorBoard on) into ``OUT/run``, then print the logged reward means.

It exits 1 when no completion earned a reward, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from wise_training.data import SYNTH_BOX_840, SYNTH_POINTS_840, synth_dataset


def _xy(values: Sequence[float]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


_ANSWER = (
    f'{{"bbox": {_xy(SYNTH_BOX_840)}, "points_1": {_xy(SYNTH_POINTS_840[0])}, '
    f'"points_2": {_xy(SYNTH_POINTS_840[1])}}}'
)
# What the stand-in policy is taught (policy frame): full task reward on the synthetic data.
SMOKE_COMPLETION = (
    "<think> the red square </think>"
    f"<answer>{_ANSWER}</answer>"
    "<d_think> the red square is the only red object and it sits on the left of the gray image "
    "</d_think>"
)
SUMMARY_KEYS = (
    "reward",
    "rewards/tag_format_reward/mean",
    "rewards/iou_reward/mean",
    "rewards/distill_reward/mean",
    "rewards/distill_earned/mean",
    "rewards/think_tokens/mean",
    "rewards/d_think_tokens/mean",
)


def prepare(out: Path, policy: Path | None = None, n: int = 16) -> tuple[Path, Path]:
    """Steps 1-3: (taught policy folder, train.jsonl)."""
    if policy is None:
        from wise_dev.teach import taught_completion, teach_policy
        from wise_dev.tiny_models import build_tiny_checkpoints

        policy = out / "policy"
        if taught_completion(policy) != SMOKE_COMPLETION:  # teach_policy marks what it taught
            from tqdm import tqdm

            tiny = build_tiny_checkpoints(out / "tiny")
            print(
                "teaching the tiny stand-in policy its answer (CPU: 150 steps and a greedy check, "
                "more rounds until every token wins by a margin; a few minutes on 2 cores)"
            )
            with tqdm(desc="teaching", unit="step", dynamic_ncols=True) as bar:

                def progress(done: int, planned: int, now: str) -> None:
                    bar.total = planned
                    bar.update(done - bar.n)
                    bar.set_postfix_str(now)

                teach_policy(tiny.policy, policy, SMOKE_COMPLETION, progress=progress)
    elif not (policy / "config.json").is_file():
        raise FileNotFoundError(f"--policy {policy}: no config.json, not a model folder")
    data = synth_dataset(out / "data", n)
    return policy, data


def summarize(metrics_path: Path) -> dict[str, float]:
    """Mean over the logged steps of each ``SUMMARY_KEYS`` entry in ``metrics.jsonl``."""
    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines()]
    out = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = sum(values) / len(values)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.train_smoke", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path(".build/smoke"))
    parser.add_argument("--policy", type=Path, default=None, help="an already taught policy folder")
    parser.add_argument("--n", type=int, default=16, help="synthetic samples (default 16)")
    parser.add_argument("overrides", nargs="*", help="more tiny_cpu overrides, section.key=value")
    args = parser.parse_args(argv)
    from wise_training.train import main as train_main

    try:
        policy, data = prepare(args.out, args.policy, args.n)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run = args.out / "run"
    code = train_main(
        [
            "--config",
            "tiny_cpu",
            f"model.path={policy}",
            f"data.train={data}",
            f"trainer.output_dir={run}",
            *args.overrides,
        ]
    )
    if code:
        return code
    summary = summarize(run / "metrics.jsonl")
    for key, value in summary.items():
        print(f"{key:34s} {value:.4f}")
    print(f"TensorBoard: tensorboard --logdir {run}   model card: {run / 'README.md'}")
    if summary.get("reward", 0.0) <= 0.0:
        print("error: no completion earned a reward", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
