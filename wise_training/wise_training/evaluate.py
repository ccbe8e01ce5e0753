"""Evaluate WISE checkpoints the way the paper does (§4, Tables 1-3 and 7, Figure 4).

Runs the real pipeline (policy + SAM2, greedy decoding) over ReasonSeg (LISA's format) and
RefCOCO / RefCOCO+ / RefCOCOg (Seg-Zero's format), in one or several inference modes, and
writes to ``--out``:

- ``per_sample.jsonl``: one line per (model, mode, dataset, sample), streamed as it goes;
- ``report.json``: gIoU, cIoU, #Tok (mean and ``token_stats``), wall time, sample and skipped
  counts per (model, mode, dataset) — schema in :func:`wise_training.report.summarize`;
- ``table.md``: the paper's Table 3 layout; ``tokens.png``: Figure 4's token-length densities;
- ``masks/<model>/<mode>/<dataset>/<sample_id>.png`` (0/255) with ``--save-masks``.

Scoring is ``wise_training.metrics.score_masks``. The IoU convention (``--convention``)
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wise_perception.core.manifest import ManifestError, has_manifest, read_manifest
from wise_perception.core.prompts import PromptMode

from .datasets_eval import (
    FORMATS,
    DatasetError,
    EvalSample,
    SkippedSample,
    eval_data_format,
    read_dataset,
    safe_name,
)
from .metrics import score_masks
from .report import (
    PER_SAMPLE_NAME,
    REPORT_SCHEMA_VERSION,
    summarize,
    write_outputs,
)

LOG = logging.getLogger("wise_training.evaluate")
INFERENCE_MODES = ("wise", "wise_s", "wise_f", "seg_zero")
MAX_SKIP_DETAILS = 200  # skipped samples listed by id in report.json (all are counted)
MAX_COMPLETION_CHARS_LOGGED = 8_000


class SegmentPipeline(Protocol):
    """What the evaluator needs from ``wise_perception.pipeline.WisePipeline``."""

    def segment_batch(self, images: list[np.ndarray], commands: list[str]) -> list[Any]: ...

    def segment(self, image_rgb: np.ndarray, command: str) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PolicySpec:
    label: str
    path: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str
    format: str


@dataclass
class EvalConfig:
    policies: list[PolicySpec]
    datasets: list[DatasetSpec]
    out: Path
    modes: list[str] = field(default_factory=lambda: ["wise_s"])
    segmenter: str | None = None
    convention: str = "lisa"
    batch_size: int = 8
    limit: int | None = None
    brevity: str | None = None
    max_new_tokens: int | None = None
    device: str | None = None
    dtype: str | None = None
    save_masks: bool = False


PipelineFactory = Callable[[EvalConfig, PolicySpec, str], SegmentPipeline]


def load_pipeline(config: EvalConfig, policy: PolicySpec, mode: str) -> SegmentPipeline:
    """The real pipeline for one policy and mode; unset options are left to the pipeline
    (and to the policy folder's ``wise_manifest.json``)."""
    from wise_perception.pipeline import WisePipeline

    kwargs: dict[str, Any] = {"policy": policy.path, "mode": mode, "batch_size": config.batch_size}
    for key in ("segmenter", "device", "dtype", "brevity", "max_new_tokens"):
        value = getattr(config, key)
        if value is not None:
            kwargs[key] = value
    return WisePipeline.from_pretrained(**kwargs)


# --------------------------------------------------------------------------- one batch


def _status(result: Any) -> str:
    status = getattr(result, "status", "internal_error")
    return str(getattr(status, "value", status))


def _predicted_mask(result: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """The result's mask when it is usable, else None (scored as an empty prediction)."""
    if _status(result) != "ok":
        return None, str(getattr(result, "error", ""))
    mask = getattr(result, "mask", None)
    if mask is None:
        return None, "ok result without a mask"
    mask = np.asarray(mask)
    if mask.shape != shape:
        return None, f"mask shape {mask.shape} differs from the ground truth {shape}"
    return mask.astype(bool), ""


@dataclass
class _Failed:
    """Stand-in result when the pipeline itself raised for a sample."""

    error: str
    status: str = "internal_error"
    mask: None = None
    reasoning_tokens: int = 0
    generated_tokens: int = 0
    rationale: str = ""
    completion: str = ""


def _run_batch(pipeline: SegmentPipeline, batch: list[EvalSample]) -> tuple[list[Any], float]:
    images = [s.image for s in batch]
    commands = [s.query for s in batch]
    start = time.perf_counter()
    try:
        results = list(pipeline.segment_batch(images, commands))
        if len(results) != len(batch):
            raise RuntimeError(f"segment_batch returned {len(results)} results for {len(batch)}")
    except Exception as exc:  # keep going sample by sample; one bad batch is not fatal
        LOG.warning("segment_batch failed (%s); retrying the batch one sample at a time", exc)
        results = []
        for image, command in zip(images, commands, strict=True):
            try:
                results.append(pipeline.segment(image, command))
            except Exception as inner:
                results.append(_Failed(error=f"{type(inner).__name__}: {inner}"))
    return results, time.perf_counter() - start


def _save_mask(path: Path, mask: np.ndarray | None, shape: tuple[int, ...]) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros(shape, dtype=np.uint8) if mask is None else mask.astype(np.uint8) * 255
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")


def _record(
    config: EvalConfig,
    policy: PolicySpec,
    mode: str,
    sample: EvalSample,
    result: Any,
    wall_s: float,
) -> dict[str, Any]:
    pred, error = _predicted_mask(result, sample.target.shape)
    score = score_masks(pred, sample.target, ignore=sample.ignore, convention=config.convention)
    timings = getattr(result, "timings", None)
    timings_ms = timings.as_ms() if hasattr(timings, "as_ms") else {}
    completion = str(getattr(result, "completion", ""))
    record: dict[str, Any] = {
        "model": policy.label,
        "mode": mode,
        "dataset": sample.dataset,
        "sample_id": sample.sample_id,
        "source": sample.source,
        "image_id": sample.image_id,
        "ann_id": sample.ann_id,
        "query": sample.query,
        "is_sentence": sample.is_sentence,
        "status": _status(result),
        "error": error,
        "intersection": score.intersection,
        "union": score.union,
        "iou": score.iou,
        "gt_area": sample.gt_area,
        "pred_area": int(pred.sum()) if pred is not None else 0,
        "reasoning_tokens": int(getattr(result, "reasoning_tokens", 0) or 0),
        "generated_tokens": int(getattr(result, "generated_tokens", 0) or 0),
        "wall_s": wall_s,
        "timings_ms": timings_ms,
        "rationale": str(getattr(result, "rationale", "")),
        "completion": completion[:MAX_COMPLETION_CHARS_LOGGED],
    }
    if config.save_masks:
        rel = Path(
            "masks",
            safe_name(policy.label),
            mode,
            safe_name(sample.dataset),
            f"{sample.sample_id}.png",
        )
        _save_mask(config.out / rel, pred, sample.target.shape)
        record["mask_file"] = rel.as_posix()
    return record


# --------------------------------------------------------------------------- the run


def _limited(
    items: Iterator[EvalSample | SkippedSample], limit: int | None
) -> Iterator[EvalSample | SkippedSample]:
    taken = 0
    for item in items:
        if limit is not None and taken >= limit:
            return
        if isinstance(item, EvalSample):
            taken += 1
        yield item


def _batches(
    items: Iterator[EvalSample | SkippedSample], size: int, skipped: list[SkippedSample]
) -> Iterator[list[EvalSample]]:
    batch: list[EvalSample] = []
    for item in items:
        if isinstance(item, SkippedSample):
            skipped.append(item)
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


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


def evaluate(config: EvalConfig, factory: PipelineFactory = load_pipeline) -> dict[str, Any]:
    """Run every (policy, mode, dataset) and write the outputs; returns the report dict."""
    if config.convention not in ("lisa", "seg_zero"):
        raise ValueError(f"unknown convention {config.convention!r}")
    if config.batch_size < 1:
        raise ValueError("batch size must be >= 1")
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    datasets: dict[str, dict[str, Any]] = {
        d.name: {
            "path": d.path,
            "format": d.format,
            "samples": 0,
            "skipped": 0,
            "skipped_samples": [],
            "error": None,
        }
        for d in config.datasets
    }
    records: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    first_pass = True
    with open(out / PER_SAMPLE_NAME, "w", encoding="utf-8") as per_sample:
        for policy in config.policies:
            for mode in config.modes:
                LOG.info("loading %s in mode %s", policy.label, mode)
                load_start = time.perf_counter()
                pipeline = factory(config, policy, mode)
                loads.append(
                    {
                        "model": policy.label,
                        "mode": mode,
                        "load_time_s": time.perf_counter() - load_start,
                    }
                )
                try:
                    for spec in config.datasets:
                        info = datasets[spec.name]
                        if info["error"]:
                            continue
                        skipped: list[SkippedSample] = []
                        n = 0
                        try:
                            items = _limited(
                                read_dataset(spec.name, spec.path, spec.format), config.limit
                            )  # type: ignore[arg-type]
                            for batch in _batches(items, config.batch_size, skipped):
                                results, wall = _run_batch(pipeline, batch)
                                for sample, result in zip(batch, results, strict=True):
                                    record = _record(
                                        config, policy, mode, sample, result, wall / len(batch)
                                    )
                                    records.append(record)
                                    per_sample.write(json.dumps(record) + "\n")
                                per_sample.flush()
                                n += len(batch)
                                LOG.info("[%s/%s/%s] %d samples", policy.label, mode, spec.name, n)
                        except DatasetError as exc:
                            LOG.error("dataset %s: %s", spec.name, exc)
                            info["error"] = str(exc)
                        if first_pass:
                            info["samples"] = n
                            info["skipped"] = len(skipped)
                            info["skipped_samples"] = [
                                {"id": s.sample_id, "reason": s.reason, "source": s.source}
                                for s in skipped[:MAX_SKIP_DETAILS]
                            ]
                            for s in skipped:
                                LOG.warning("skipped %s/%s: %s", spec.name, s.sample_id, s.reason)
                finally:
                    pipeline.close()
                first_pass = False
    skipped_counts = {name: int(info["skipped"]) for name, info in datasets.items()}
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "convention": config.convention,
        "decoding": "greedy",
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": _config_dict(config),
        "policies": [_policy_info(p) for p in config.policies],
        "environment": _environment(),
        "datasets": datasets,
        "pipelines": loads,
        "results": summarize(records, skipped_counts),
    }
    write_outputs(out, report, records)
    return report


def _config_dict(config: EvalConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out"] = str(config.out)
    return data


# --------------------------------------------------------------------------- CLI


def _split_label(value: str) -> tuple[str | None, str]:
    """``LABEL=PATH`` -> (LABEL, PATH); a plain path (even one with '=' in a folder name) -> (None, PATH)."""
    label, sep, rest = value.partition("=")
    if sep and label and os.sep not in label and rest:
        return label, rest
    return None, value


def _parse_policies(values: Sequence[str]) -> list[PolicySpec]:
    policies = []
    for value in values:
        label, path = _split_label(value)
        policies.append(PolicySpec(label or (Path(path).name or path), path))
    labels = [p.label for p in policies]
    if len(set(labels)) != len(labels):
        raise ValueError(f"policy labels must be unique, got {labels}: use LABEL=PATH")
    return policies


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
        help="ReasonSeg split folder (LISA format) or Seg-Zero parquet/dataset; repeatable",
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
        choices=[m.value for m in PromptMode if m is not PromptMode.WISE_TRAIN],
        help="inference modes (default: wise_s); paper: seg_zero, wise, wise_s, wise_f",
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
        policies=_parse_policies(args.policy),
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


def main(argv: Sequence[str] | None = None, factory: PipelineFactory = load_pipeline) -> int:
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
    except (ManifestError, FileNotFoundError) as exc:
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
