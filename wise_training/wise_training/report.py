"""Evaluation outputs: ``report.json``, ``table.md`` (paper Table 3) and ``tokens.png`` (Figure 4).

Scores come from :mod:`wise_training.metrics` only (``score_masks`` per sample,
:class:`SegmentationScores` for gIoU/cIoU, ``token_stats`` for #Tok); this module aggregates
per-sample records (the lines of ``per_sample.jsonl``) and renders them.

``python -m wise_training.report RUN_DIR [RUN_DIR ...] --out DIR`` merges the outputs of
several evaluation runs (e.g. the Seg-Zero baseline and a WISE checkpoint evaluated apart) into
one report, table and plot.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import SampleScore, SegmentationScores, token_stats

REPORT_SCHEMA_VERSION = 1
REPORT_NAME = "report.json"
PER_SAMPLE_NAME = "per_sample.jsonl"
TABLE_NAME = "table.md"
PLOT_NAME = "tokens.png"

# How the paper names the inference modes (Table 3, Table 7).
MODE_NAMES = {
    "seg_zero": "Seg-Zero",
    "wise": "WISE",
    "wise_s": "WISE-S",
    "wise_f": "WISE-F",
}
BASELINE_MODE = "seg_zero"


# Policies labelled ``baseline:<name>`` answer by rule, not from the prompt: shown by label alone.
BASELINE_PREFIX = "baseline:"


def row_label(model: str, mode: str, *, several_models: bool) -> str:
    if model.startswith(BASELINE_PREFIX):
        return model
    name = MODE_NAMES.get(mode, mode)
    return f"{model} {name}" if several_models else name


def _scores(records: Sequence[Mapping[str, Any]]) -> SegmentationScores:
    scores = SegmentationScores()
    for r in records:
        scores.add(SampleScore(int(r["intersection"]), int(r["union"]), float(r["iou"])))
    return scores


def _summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    scores = _scores(records)
    tokens = [int(r["reasoning_tokens"]) for r in records]
    wall = float(sum(float(r["wall_s"]) for r in records))
    stats = token_stats(tokens)
    return {
        "n": len(records),
        "gIoU": scores.giou,
        "cIoU": scores.ciou,
        "mean_tokens": float(stats["mean"]),
        "token_stats": stats,
        "wall_time_s": wall,
        "wall_time_per_sample_s": wall / len(records) if records else 0.0,
    }


def summarize(
    records: Iterable[Mapping[str, Any]],
    skipped: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One result row per (model, mode, dataset), in first-seen order.

    Row keys: model, mode, dataset, n, skipped, gIoU, cIoU (0..1), mean_tokens, token_stats,
    wall_time_s, wall_time_per_sample_s, pipeline_time_per_sample_s, status_counts, failed
    (samples scored as "no mask"), and splits (ReasonSeg long/short queries) when known.
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        key = (str(record["model"]), str(record["mode"]), str(record["dataset"]))
        groups.setdefault(key, []).append(record)
    rows = []
    for (model, mode, dataset), group in groups.items():
        row: dict[str, Any] = {"model": model, "mode": mode, "dataset": dataset}
        row.update(_summary(group))
        row["skipped"] = int((skipped or {}).get(dataset, 0))
        pipeline = [float(r.get("timings_ms", {}).get("total_ms", 0.0)) / 1000.0 for r in group]
        row["pipeline_time_per_sample_s"] = float(np.mean(pipeline)) if pipeline else 0.0
        statuses = Counter(str(r["status"]) for r in group)
        row["status_counts"] = dict(sorted(statuses.items()))
        row["failed"] = sum(n for s, n in statuses.items() if s != "ok")
        splits = {}
        for name, flag in (("long", True), ("short", False)):
            part = [r for r in group if r.get("is_sentence") is flag]
            if part:
                splits[name] = {k: v for k, v in _summary(part).items() if k != "token_stats"}
        if splits:
            row["splits"] = splits
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- table (Table 3)


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}"


def markdown_table(report: Mapping[str, Any]) -> str:
    """Table 3's shape: one row per model/mode; per dataset the columns #Tok, cIoU and gIoU.

    When a ``seg_zero`` row is present it is the baseline, and every other row is followed by
    a "vs. <baseline>" row with the token reduction factor and the cIoU difference, as in the
    paper. gIoU/cIoU are percentages; #Tok is the mean reasoning length.
    """
    rows: list[Mapping[str, Any]] = report.get("results", [])
    datasets: list[str] = []
    methods: list[tuple[str, str]] = []
    for row in rows:
        if row["dataset"] not in datasets:
            datasets.append(row["dataset"])
        if (row["model"], row["mode"]) not in methods:
            methods.append((row["model"], row["mode"]))
    cell = {(r["model"], r["mode"], r["dataset"]): r for r in rows}
    several = len({m for m, _ in methods}) > 1
    header = ["Method"]
    for dataset in datasets:
        header += [f"{dataset} #Tok", f"{dataset} cIoU", f"{dataset} gIoU"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    baseline = next((m for m in methods if m[1] == BASELINE_MODE), None)
    for method in methods:
        values = [row_label(*method, several_models=several)]
        for dataset in datasets:
            r = cell.get((*method, dataset))
            values += (
                [f"{r['mean_tokens']:.1f}", _pct(r["cIoU"]), _pct(r["gIoU"])] if r else ["-"] * 3
            )
        lines.append("| " + " | ".join(values) + " |")
        if baseline is None or method == baseline:
            continue
        base_name = row_label(*baseline, several_models=several)
        diff = [f"vs. {base_name}"]
        for dataset in datasets:
            r, b = cell.get((*method, dataset)), cell.get((*baseline, dataset))
            if not r or not b:
                diff += ["-"] * 3
                continue
            ratio = b["mean_tokens"] / r["mean_tokens"] if r["mean_tokens"] else math.inf
            diff += [
                f"({ratio:.1f}×)" if math.isfinite(ratio) else "(∞)",
                f"({100.0 * (r['cIoU'] - b['cIoU']):+.1f})",
                f"({100.0 * (r['gIoU'] - b['gIoU']):+.1f})",
            ]
        lines.append("| " + " | ".join(diff) + " |")
    notes = [
        "",
        f"gIoU/cIoU in %, convention `{report.get('convention', 'lisa')}`, "
        f"{report.get('decoding', 'greedy')} decoding; #Tok = mean reasoning tokens "
        "(policy tokenizer, <think> text).",
    ]
    counts = [
        f"{d}: n={cell[(*methods[0], d)]['n']}, skipped={cell[(*methods[0], d)]['skipped']}"
        for d in datasets
        if (*methods[0], d) in cell
    ]
    if counts:
        notes.append("Samples per dataset: " + "; ".join(counts) + ".")
    split_lines = _split_table(rows, methods, several)
    return "\n".join(lines + notes + split_lines) + "\n"


def _split_table(
    rows: Sequence[Mapping[str, Any]], methods: list[tuple[str, str]], several: bool
) -> list[str]:
    """ReasonSeg's short-query / long-query breakdown (LISA's Table 1 columns), if any."""
    with_splits = [r for r in rows if r.get("splits")]
    if not with_splits:
        return []
    out = [
        "",
        "| Method | Dataset | Split | n | #Tok | gIoU | cIoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for r in with_splits:
            if (r["model"], r["mode"]) != method:
                continue
            for split, s in r["splits"].items():
                out.append(
                    f"| {row_label(*method, several_models=several)} | {r['dataset']} | {split} "
                    f"| {s['n']} | {s['mean_tokens']:.1f} | {_pct(s['gIoU'])} | {_pct(s['cIoU'])} |"
                )
    return out


# --------------------------------------------------------------------------- plot (Figure 4)


def _kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Gaussian kernel density with Scott's bandwidth; None when it is undefined."""
    if values.size < 2 or float(values.std()) == 0.0:
        return None
    bandwidth = float(values.std(ddof=1)) * values.size ** (-1.0 / 5.0)
    z = (grid[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z * z).sum(axis=1) / (values.size * bandwidth * math.sqrt(2 * math.pi))


def plot_tokens(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Figure 4 as small multiples: one row per model/mode, one column per dataset, each panel
    the histogram of #Tok (density) with its kernel density and mean, on an x axis shared by
    the column, so distributions compare without hiding one another. PNG via Agg."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    data: dict[str, dict[tuple[str, str], list[int]]] = {}
    methods: list[tuple[str, str]] = []
    for r in records:
        method = (str(r["model"]), str(r["mode"]))
        if method not in methods:
            methods.append(method)
        by_method = data.setdefault(str(r["dataset"]), {})
        by_method.setdefault(method, []).append(int(r["reasoning_tokens"]))
    several = len({m for m, _ in methods}) > 1
    rows, cols = max(len(methods), 1), max(len(data), 1)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(5.0 * cols, 0.3 + 1.15 * rows),
        squeeze=False,
        sharex="col",
        constrained_layout=True,
    )
    for col, (dataset, by_method) in enumerate(data.items()):
        top = max(max(v) for v in by_method.values())
        grid = np.linspace(0.0, max(top * 1.05, 1.0), 400)
        # Integer counts: bins of whole tokens, at most ~60 bars over the range.
        width = max(1, math.ceil((top + 1) / 60))
        bins = np.arange(0, top + width + 1, width) - 0.5
        axes[0][col].set_title(dataset)
        for row, method in enumerate(methods):
            ax = axes[row][col]
            counts = by_method.get(method)
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(
                    row_label(*method, several_models=several),
                    rotation=0,
                    ha="right",
                    va="center",
                    fontsize="small",
                )
            if not counts:
                continue
            values = np.asarray(counts, dtype=float)
            color = f"C{row % 10}"
            ax.hist(values, bins=bins, density=True, color=color, alpha=0.45)
            density = _kde(values, grid)
            if density is not None:
                ax.plot(grid, density, color=color, linewidth=1)
            ax.axvline(values.mean(), color="black", linestyle="--", linewidth=0.8)
            ax.text(
                0.99,
                0.8,
                f"mean {values.mean():.1f}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize="small",
            )
        axes[-1][col].set_xlabel("reasoning tokens (#Tok)")
    if not data:
        axes[0][0].text(0.5, 0.5, "no samples", ha="center", va="center")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- files


def read_per_sample(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_outputs(
    out_dir: str | Path, report: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> dict[str, Path]:
    """Write report.json, table.md and tokens.png (per_sample.jsonl is streamed by the evaluator)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / REPORT_NAME
    report_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    table_path = out / TABLE_NAME
    table_path.write_text(markdown_table(report), encoding="utf-8")
    plot_path = plot_tokens(records, out / PLOT_NAME)
    return {"report": report_path, "table": table_path, "plot": plot_path}


def merge_runs(run_dirs: Sequence[str | Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One report from several evaluation output folders (results and samples concatenated)."""
    reports = []
    records: list[dict[str, Any]] = []
    for run in run_dirs:
        run = Path(run)
        reports.append(json.loads((run / REPORT_NAME).read_text(encoding="utf-8")))
        records += read_per_sample(run / PER_SAMPLE_NAME)
    conventions = {r.get("convention") for r in reports}
    if len(conventions) > 1:
        raise ValueError(f"runs use different IoU conventions {sorted(map(str, conventions))}")
    datasets: dict[str, Any] = {}
    for r in reports:
        datasets.update(r.get("datasets", {}))
    skipped = {name: int(info.get("skipped", 0)) for name, info in datasets.items()}
    merged = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "convention": reports[0].get("convention", "lisa") if reports else "lisa",
        "decoding": reports[0].get("decoding", "greedy") if reports else "greedy",
        "merged_from": [str(r) for r in run_dirs],
        "datasets": datasets,
        "results": summarize(records, skipped),
    }
    return merged, records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_training.report",
        description="Merge evaluation runs into one report.json, table.md and tokens.png.",
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help="output folders of wise_training.evaluate"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        report, records = merge_runs(args.runs)
    except (OSError, ValueError, KeyError) as exc:
        parser.exit(2, f"error: {exc}\n")
    paths = write_outputs(args.out, report, records)
    with open(Path(args.out) / PER_SAMPLE_NAME, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    print(Path(paths["table"]).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
