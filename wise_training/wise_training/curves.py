"""Training curves of one or several runs, from their ``metrics.jsonl``: the reasoning lengths
(``<think>`` and ``<d_think>`` tokens), the share of completions that earned the distillation
reward, the accuracy reward (R_acc, Eq. 3) and the total reward, against the step.

    python -m wise_training.curves outputs/seg_zero outputs/wise --out curves.png

Each run is labelled by its folder name (or ``LABEL=FOLDER``). TensorBoard shows the same tags
(``train/rewards/<term>/mean``); this puts the runs of a comparison on one page.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

METRICS_NAME = "metrics.jsonl"
ACCURACY_TERMS = ("iou_reward", "box_l1_reward", "points_reward")
# (title, y label, how a panel's value comes from one logged record)
PANELS = (
    ("<think> tokens", "tokens", ("think_tokens",)),
    ("<d_think> tokens", "tokens", ("d_think_tokens",)),
    ("distillation earned", "share of completions", ("distill_earned",)),
    ("accuracy reward (R_acc)", "sum of IoU, L1, point terms", ACCURACY_TERMS),
    ("total reward", "reward", ()),
)


def read_metrics(run: str | Path) -> list[dict[str, float]]:
    """The logged records of a run folder (or of a ``metrics.jsonl`` path), in step order."""
    path = Path(run)
    path = path / METRICS_NAME if path.is_dir() else path
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return sorted((r for r in records if "reward" in r), key=lambda r: r["step"])


def panel_values(records: Sequence[dict[str, float]], terms: Sequence[str]) -> np.ndarray | None:
    """One value per record: the sum of the terms' means (``reward`` itself for no terms);
    None when the run logged none of them."""
    if not terms:
        return np.array([r["reward"] for r in records], dtype=float)
    keys = [f"rewards/{t}/mean" for t in terms]
    if not any(k in r for r in records for k in keys):
        return None
    return np.array([sum(float(r.get(k, 0.0)) for k in keys) for r in records], dtype=float)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_curves(runs: dict[str, Sequence[dict[str, float]]], path: str | Path) -> Path:
    """One panel per quantity (``PANELS``), one line per run (a moving average over ~5% of the
    steps, the raw values faint behind it). PNG via Agg."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), squeeze=False)
    for ax, (title, ylabel, terms) in zip(axes[0], PANELS, strict=True):
        for index, (label, records) in enumerate(runs.items()):
            values = panel_values(records, terms) if records else None
            if values is None:
                continue
            steps = np.array([r["step"] for r in records])
            color = f"C{index % 10}"
            ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.8)
            window = max(1, len(values) // 20)
            ax.plot(steps, _smooth(values, window), color=color, label=label, linewidth=1.6)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        if len(ax.get_legend_handles_labels()[1]) > len(labels):
            handles, labels = ax.get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(value: str) -> tuple[str, Path]:
    label, sep, rest = value.partition("=")
    if sep and label and rest:
        return label, Path(rest)
    return Path(value).name, Path(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_training.curves",
        description="Plot think/d_think tokens, distillation earned, accuracy and total reward "
        "against the step for one or several training runs (their metrics.jsonl).",
    )
    parser.add_argument("runs", nargs="+", help="run folders (trainer.output_dir), or LABEL=FOLDER")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    runs = {}
    try:
        for value in args.runs:
            label, folder = _label(value)
            runs[label] = read_metrics(folder)
    except (OSError, ValueError, KeyError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(plot_curves(runs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
