"""Evaluate WISE checkpoints the way the paper does (§4, Tables 1-3 and 7, Figure 4).

Runs the real pipeline (policy + SAM2, greedy decoding) over ReasonSeg (LISA's format) and
RefCOCO / RefCOCO+ / RefCOCOg (Seg-Zero's format), in one or several inference modes, and
writes to ``--out``:

- ``per_sample.jsonl``: one line per (model, mode, dataset, sample), streamed as it goes;
- ``report.json``: gIoU, cIoU, #Tok (mean and ``token_stats``), wall time, sample and skipped
  counts per (model, mode, dataset) — schema in :func:`wise_training.report.summarize`;
- ``table.md``: the paper's Table 3 layout; ``tokens.png``: Figure 4's token-length densities;
- ``masks/<model>/<mode>/<dataset>/<sample_id>.png`` (0/255) with ``--save-masks``.

Each policy is loaded once and evaluated in every mode on every dataset through
``eval_runner.run_dataset`` (the pipeline's mode is per request); this module reads the command
line and writes the outputs. Scoring is
``wise_training.metrics.score_masks``. The IoU convention (``--convention``)
defaults to ``lisa`` (ignore regions excluded, an empty union scores 1); ``seg_zero`` is
Seg-Zero's (ignore counts as target, empty union scores 0). An answer that does not parse, or
any other failed result, is an empty prediction: intersection 0, union = ground-truth area, as
in the released evaluation. A corrupt sample is skipped and counted, never fatal.

Example::

    python -m wise_training.evaluate --policy outputs/wise/export --segmenter facebook/sam2-hiera-large \\
        --dataset reasonseg_val=data/ReasonSeg/val --dataset reasonseg_test=data/ReasonSeg/test \\
        --dataset refcocog_test=data/refcocog_test --modes wise wise_s --batch-size 8 --out eval/wise
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from wise_perception.core.manifest import ManifestError, has_manifest, read_manifest
from wise_perception.core.prompts import PromptMode
from wise_perception.pipeline import SettingsError
from wise_perception.visualize import mask_to_uint8

from .datasets_eval import (
    FORMATS,
    DatasetError,
    DatasetFormat,
    SkippedSample,
    eval_data_format,
    read_dataset,
    safe_name,
)
from .eval_runner import Outcome, SegmentPipeline, run_dataset
from .metrics import Convention
from .report import PER_SAMPLE_NAME, REPORT_SCHEMA_VERSION, summarize, write_outputs

LOG = logging.getLogger("wise_training.evaluate")
INFERENCE_MODES = tuple(m.value for m in PromptMode if m is not PromptMode.WISE_TRAIN)
MAX_SKIP_DETAILS = 200  # skipped samples listed by id in report.json (all are counted)


@dataclass(frozen=True)
class PolicySpec:
    label: str
    path: str
    # The inference modes to evaluate this policy in; empty: the run's ``modes``.
    modes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str
    format: DatasetFormat


@dataclass
class EvalConfig:
    policies: list[PolicySpec]
    datasets: list[DatasetSpec]
    out: Path
    modes: list[str] = field(default_factory=lambda: ["wise_s"])
    segmenter: str | None = None
    convention: Convention = "lisa"
    batch_size: int = 8
    limit: int | None = None
    brevity: str | None = None
    max_new_tokens: int | None = None
    device: str | None = None
    dtype: str | None = None
    save_masks: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}


EvalPipelineFactory = Callable[[EvalConfig, PolicySpec], SegmentPipeline]


def open_eval_pipeline(config: EvalConfig, policy: PolicySpec) -> SegmentPipeline:
    """The real pipeline for one policy, serving every mode of ``config``; unset options are
    left to the pipeline (and to the policy folder's ``wise_manifest.json``). Every mode's
    prompt is checked here, so a mode the checkpoint cannot be prompted in (wise_s without a
    brevity instruction) fails before any sample is run."""
    from wise_perception.pipeline import WisePipeline

    kwargs: dict[str, Any] = {"policy": policy.path, "batch_size": config.batch_size}
    options = {
        "segmenter": config.segmenter,
        "device": config.device,
        "dtype": config.dtype,
        "brevity": config.brevity,
        "max_new_tokens": config.max_new_tokens,
    }
    kwargs.update({key: value for key, value in options.items() if value is not None})
    pipeline = WisePipeline.from_pretrained(**kwargs)
    for mode in policy.modes or config.modes:
        try:
            pipeline.prompt_spec(mode)
        except ValueError as exc:
            pipeline.close()
            raise SettingsError(f"{policy.label} cannot be prompted in mode {mode}: {exc}") from exc
    return pipeline


# --------------------------------------------------------------------------- outputs


@dataclass
class DatasetStatus:
    """A dataset's entry in ``report.json``: counted on the first (policy, mode) pass."""

    path: str
    format: str
    samples: int = 0
    skipped: int = 0
    skipped_samples: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def count(self, name: str, samples: int, skipped: list[SkippedSample]) -> None:
        self.samples, self.skipped = samples, len(skipped)
        self.skipped_samples = [
            {"id": s.sample_id, "reason": s.reason, "source": s.source}
            for s in skipped[:MAX_SKIP_DETAILS]
        ]
        for s in skipped:
            LOG.warning("skipped %s/%s: %s", name, s.sample_id, s.reason)


class Records:
    """``per_sample.jsonl``, written as samples are scored, and the records for the report."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.all: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.all.append(record)
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()


def save_mask(config: EvalConfig, outcome: Outcome, model: str, mode: str) -> str:
    """``masks/<model>/<mode>/<dataset>/<sample_id>.png`` (0/255; all 0 for no prediction)."""
    import cv2

    sample = outcome.sample
    relative = Path(
        "masks", safe_name(model), mode, safe_name(sample.dataset), f"{sample.sample_id}.png"
    )
    path = config.out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = mask_to_uint8(outcome.prediction, sample.target.shape)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")
    return relative.as_posix()


def _policy_info(policy: PolicySpec) -> dict[str, Any]:
    info: dict[str, Any] = {"label": policy.label, "path": policy.path}
    if Path(policy.path).is_dir() and has_manifest(policy.path):
        try:
            manifest = read_manifest(policy.path)
        except ManifestError as exc:
            info["manifest_error"] = str(exc)
        else:
            info["manifest"] = {
                "prompt_mode": manifest.prompt_mode,
                "brevity": manifest.brevity,
                "segmenter": manifest.segmenter,
                "base_model": manifest.base_model,
                "training_config_sha256": manifest.training_config_sha256,
            }
    return info


def _environment() -> dict[str, str]:
    env = {"python": sys.version.split()[0]}
    for module in ("torch", "transformers", "numpy"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            continue
    return env


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the run


def _evaluate_dataset(
    config: EvalConfig,
    pipeline: SegmentPipeline,
    labels: tuple[str, str],
    spec: DatasetSpec,
    records: Records,
) -> tuple[int, list[SkippedSample], str | None]:
    """Scores one dataset into ``records``: (samples evaluated, samples skipped, the error
    that stopped the dataset, if one did)."""
    model, mode = labels
    skipped: list[SkippedSample] = []
    n = 0
    try:
        outcomes = run_dataset(
            pipeline,
            read_dataset(spec.name, spec.path, spec.format),
            batch_size=config.batch_size,
            convention=config.convention,
            limit=config.limit,
            mode=mode,
        )
        for outcome in outcomes:
            if isinstance(outcome, SkippedSample):
                skipped.append(outcome)
                continue
            record = outcome.record(model, mode)
            if config.save_masks:
                record["mask_file"] = save_mask(config, outcome, model, mode)
            records.add(record)
            n += 1
            if n % config.batch_size == 0:
                LOG.info("[%s/%s/%s] %d samples", model, mode, spec.name, n)
    except DatasetError as exc:
        LOG.error("dataset %s: %s", spec.name, exc)
        return n, skipped, str(exc)
    return n, skipped, None


def _evaluate_pipeline(
    config: EvalConfig,
    pipeline: SegmentPipeline,
    labels: tuple[str, str],
    datasets: dict[str, DatasetStatus],
    records: Records,
    first_pass: bool,
) -> None:
    """Every dataset through one policy's pipeline in one mode; a dataset that failed is not
    retried."""
    for spec in config.datasets:
        status = datasets[spec.name]
        if status.error:
            continue
        n, skipped, status.error = _evaluate_dataset(config, pipeline, labels, spec, records)
        if first_pass:
            status.count(spec.name, n, skipped)


def evaluate(
    config: EvalConfig, factory: EvalPipelineFactory = open_eval_pipeline
) -> dict[str, Any]:
    """Run every (policy, mode, dataset) and write the outputs; returns the report dict."""
    if config.convention not in ("lisa", "seg_zero"):
        raise ValueError(f"unknown convention {config.convention!r}")
    if config.batch_size < 1:
        raise ValueError("batch size must be >= 1")
    config.out.mkdir(parents=True, exist_ok=True)
    started = _now()
    datasets = {d.name: DatasetStatus(d.path, d.format) for d in config.datasets}
    loads: list[dict[str, Any]] = []
    with open(config.out / PER_SAMPLE_NAME, "w", encoding="utf-8") as handle:
        records = Records(handle)
        for index, policy in enumerate(config.policies):
            modes = policy.modes or config.modes
            LOG.info("loading %s (modes %s)", policy.label, ", ".join(modes))
            load_start = time.perf_counter()
            pipeline = factory(config, policy)
            load_s = time.perf_counter() - load_start
            loads.append({"model": policy.label, "modes": list(modes), "load_time_s": load_s})
            try:
                for mode_index, mode in enumerate(modes):
                    first_pass = index == 0 and mode_index == 0
                    labels = (policy.label, mode)
                    _evaluate_pipeline(config, pipeline, labels, datasets, records, first_pass)
            finally:
                pipeline.close()
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "convention": config.convention,
        "decoding": "greedy",
        "started_at": started,
        "finished_at": _now(),
        "config": config.to_dict(),
        "policies": [_policy_info(p) for p in config.policies],
        "environment": _environment(),
        "datasets": {name: asdict(status) for name, status in datasets.items()},
        "pipelines": loads,
        "results": summarize(records.all, {n: s.skipped for n, s in datasets.items()}),
    }
    write_outputs(config.out, report, records.all)
    return report


# --------------------------------------------------------------------------- CLI


def _split_label(value: str) -> tuple[str | None, str]:
    """``LABEL=PATH`` -> (LABEL, PATH); a plain path (even one with '=' in a folder name) -> (None, PATH)."""
    label, sep, rest = value.partition("=")
    if sep and label and os.sep not in label and rest:
        return label, rest
    return None, value


def _parse_policies(values: Sequence[str], policy_modes: Sequence[str] = ()) -> list[PolicySpec]:
    policies = []
    for value in values:
        label, path = _split_label(value)
        policies.append(PolicySpec(label or (Path(path).name or path), path))
    labels = [p.label for p in policies]
    if len(set(labels)) != len(labels):
        raise ValueError(f"policy labels must be unique, got {labels}: use LABEL=PATH")
    modes: dict[str, tuple[str, ...]] = {}
    for value in policy_modes:
        label, _, names = value.partition("=")
        chosen = tuple(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
        if label not in labels or not chosen:
            raise ValueError(
                f"--policy-modes wants LABEL=MODE[,MODE...] of a --policy, got {value!r}"
            )
        unknown = [m for m in chosen if m not in INFERENCE_MODES]
        if unknown:
            raise ValueError(f"--policy-modes {value!r}: unknown modes {unknown}")
        modes[label] = chosen
    return [PolicySpec(p.label, p.path, modes.get(p.label, ())) for p in policies]


def _parse_datasets(values: Sequence[str], formats: Sequence[str]) -> list[DatasetSpec]:
    forced: dict[str, str] = {}
    for value in formats:
        name, _, fmt = value.partition("=")
        if fmt not in FORMATS:
            raise ValueError(f"--format wants NAME={'|'.join(FORMATS)}, got {value!r}")
        forced[name] = fmt
    specs = []
    for value in values:
        name, path = _split_label(value)
        name = name or Path(path).name
        fmt = forced.get(name) or eval_data_format(path)
        specs.append(DatasetSpec(name, path, fmt))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique, got {names}: use NAME=PATH")
    unknown = set(forced) - set(names)
    if unknown:
        raise ValueError(f"--format names unknown datasets {sorted(unknown)}")
    return specs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wise_training.evaluate",
        description="gIoU / cIoU / #Tok / wall time of WISE checkpoints on ReasonSeg and RefCOCO(+/g), "
        "through the real pipeline (greedy decoding).",
    )
    parser.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="[LABEL=]PATH",
        help="policy checkpoint (exported folder or HF id); repeat to compare models",
    )
    parser.add_argument(
        "--segmenter",
        default=None,
        help="SAM2 folder or id (default: the policy's manifest, else the pipeline's)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="ReasonSeg split folder (LISA format), Seg-Zero parquet/dataset or the project's "
        "JSONL (e.g. python -m wise_training.scenes); repeatable",
    )
    parser.add_argument(
        "--format",
        action="append",
        default=[],
        metavar="NAME=FORMAT",
        help=f"force a dataset's format ({', '.join(FORMATS)}); detected by default",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["wise_s"],
        choices=INFERENCE_MODES,
        help="inference modes (default: wise_s); paper: seg_zero, wise, wise_s, wise_f",
    )
    parser.add_argument(
        "--policy-modes",
        action="append",
        default=[],
        metavar="LABEL=MODE[,MODE...]",
        help="the modes of one policy (default: --modes), e.g. seg_zero=seg_zero,wise_s",
    )
    parser.add_argument(
        "--convention",
        choices=["lisa", "seg_zero"],
        default="lisa",
        help="IoU edge-case convention (default: lisa; see wise_training.metrics)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="at most N samples per dataset")
    parser.add_argument(
        "--brevity", default=None, help="WISE-S brevity instruction (default: manifest's)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument(
        "--device", default=None, help="e.g. cuda, cuda:1, cpu (default: the pipeline's)"
    )
    parser.add_argument(
        "--dtype", default=None, help="e.g. bfloat16, float32 (default: the pipeline's)"
    )
    parser.add_argument(
        "--save-masks",
        action="store_true",
        help="write predicted masks as PNG (0/255) under OUT/masks/",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    return EvalConfig(
        policies=_parse_policies(args.policy, args.policy_modes),
        datasets=_parse_datasets(args.dataset, args.format),
        out=args.out,
        modes=list(dict.fromkeys(args.modes)),
        segmenter=args.segmenter,
        convention=args.convention,
        batch_size=args.batch_size,
        limit=args.limit,
        brevity=args.brevity,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        dtype=args.dtype,
        save_masks=args.save_masks,
    )


def main(
    argv: Sequence[str] | None = None, factory: EvalPipelineFactory = open_eval_pipeline
) -> int:
    """Exit codes: 0 done, 1 nothing could be evaluated, 2 bad arguments or data paths."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        config = config_from_args(args)
    except (ValueError, DatasetError) as exc:
        parser.exit(2, f"error: {exc}\n")
    try:
        report = evaluate(config, factory)
    except (ManifestError, FileNotFoundError, SettingsError) as exc:
        print(f"error: cannot load the pipeline: {exc}", file=sys.stderr)
        return 2
    for row in report["results"]:
        print(
            f"{row['model']} {row['mode']} {row['dataset']}: n={row['n']} skipped={row['skipped']} "
            f"gIoU={100 * row['gIoU']:.1f} cIoU={100 * row['cIoU']:.1f} #Tok={row['mean_tokens']:.1f} "
            f"wall={row['wall_time_s']:.1f}s"
        )
    print(f"convention: {config.convention}; outputs in {config.out}")
    return 0 if any(row["n"] for row in report["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
