"""One pipeline over one evaluation set: batched segmentation, scored sample by sample.

:func:`run_dataset` feeds a reader's samples (``datasets_eval``) to a pipeline in batches, all
prompted in one mode (the pipeline's mode is per request, so one loaded policy serves every
mode), and yields, in reading order, each skipped sample as it is and an :class:`Outcome` for each
evaluated one: the pipeline's :class:`~wise_perception.result.Result`, the mask it is scored on
and its score (``metrics.score_masks``). A result that is not ``ok``, or whose mask is missing
or of another size, is an empty prediction: intersection 0, union = ground-truth area, as in
the released evaluation. A batch that raises is retried sample by sample, and a sample that
raises gets an ``internal_error`` result: one bad sample never ends a run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from wise_perception.result import Result, Status

from .datasets_eval import EvalSample, ReaderItem, SkippedSample
from .metrics import Convention, SampleScore, score_masks

LOG = logging.getLogger(__name__)
MAX_COMPLETION_CHARS_LOGGED = 8_000


class SegmentPipeline(Protocol):
    """What the evaluator needs of ``wise_perception.pipeline.WisePipeline``."""

    def segment_batch(
        self, images: list[np.ndarray], commands: list[str], *, mode: str | None = None
    ) -> list[Result]: ...

    def segment(
        self, image_rgb: np.ndarray, command: str, *, mode: str | None = None
    ) -> Result: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """One evaluated sample."""

    sample: EvalSample
    result: Result
    prediction: np.ndarray | None  # HxW bool; None is scored as an empty prediction
    error: str  # why there is no prediction; "" when there is one
    score: SampleScore
    wall_s: float  # the batch's wall time over its samples

    def record(self, model: str, mode: str) -> dict[str, Any]:
        """The sample's line of ``per_sample.jsonl`` (what ``report.summarize`` reads)."""
        sample, result = self.sample, self.result
        return {
            "model": model,
            "mode": mode,
            "dataset": sample.dataset,
            "sample_id": sample.sample_id,
            "source": sample.source,
            "image_id": sample.image_id,
            "ann_id": sample.ann_id,
            "query": sample.query,
            "is_sentence": sample.is_sentence,
            "status": result.status.value,
            "error": self.error,
            "intersection": self.score.intersection,
            "union": self.score.union,
            "iou": self.score.iou,
            "gt_area": sample.gt_area,
            "pred_area": int(self.prediction.sum()) if self.prediction is not None else 0,
            "reasoning_tokens": result.reasoning_tokens,
            "generated_tokens": result.generated_tokens,
            "wall_s": self.wall_s,
            "timings_ms": result.timings.as_ms(),
            "rationale": result.rationale,
            "completion": result.completion[:MAX_COMPLETION_CHARS_LOGGED],
        }


def predicted_mask(result: Result, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """The result's mask when it can be scored, else (None, why not)."""
    if not result.ok:
        return None, result.error
    if result.mask is None:
        return None, "ok result without a mask"
    mask = np.asarray(result.mask)
    if mask.shape != shape:
        return None, f"mask shape {mask.shape} differs from the ground truth {shape}"
    return mask.astype(bool), ""


def segment(
    pipeline: SegmentPipeline, batch: list[EvalSample], mode: str | None = None
) -> tuple[list[Result], float]:
    """One result per sample (prompted in ``mode``) and the wall time; falls back to one
    sample at a time."""
    images, commands = [s.image for s in batch], [s.query for s in batch]
    start = time.perf_counter()
    try:
        results = list(pipeline.segment_batch(images, commands, mode=mode))
        if len(results) != len(batch):
            raise RuntimeError(f"segment_batch returned {len(results)} results for {len(batch)}")
    except Exception as exc:  # keep going sample by sample; one bad batch is not fatal
        LOG.warning("segment_batch failed (%s); retrying the batch one sample at a time", exc)
        results = [
            _segment_one(pipeline, image, command, mode)
            for image, command in zip(images, commands, strict=True)
        ]
    return results, time.perf_counter() - start


def _segment_one(
    pipeline: SegmentPipeline, image: np.ndarray, command: str, mode: str | None
) -> Result:
    try:
        return pipeline.segment(image, command, mode=mode)
    except Exception as exc:  # recorded as this sample's failure
        return Result.failure(command, Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _scored(
    pipeline: SegmentPipeline, batch: list[EvalSample], convention: Convention, mode: str | None
) -> Iterator[Outcome]:
    results, wall = segment(pipeline, batch, mode)
    for sample, result in zip(batch, results, strict=True):
        prediction, error = predicted_mask(result, sample.target.shape)
        score = score_masks(prediction, sample.target, ignore=sample.ignore, convention=convention)
        yield Outcome(sample, result, prediction, error, score, wall / len(batch))


def run_dataset(
    pipeline: SegmentPipeline,
    items: Iterable[ReaderItem],
    *,
    batch_size: int,
    convention: Convention = "lisa",
    limit: int | None = None,
    mode: str | None = None,
) -> Iterator[Outcome | SkippedSample]:
    """Evaluate at most ``limit`` samples of ``items`` (skipped ones do not count), prompted
    in ``mode`` (default: the pipeline's)."""
    if batch_size < 1:
        raise ValueError("batch size must be >= 1")
    batch: list[EvalSample] = []
    taken = 0
    for item in items:
        if limit is not None and taken >= limit:
            break
        if isinstance(item, SkippedSample):
            yield item
            continue
        taken += 1
        batch.append(item)
        if len(batch) == batch_size:
            yield from _scored(pipeline, batch, convention, mode)
            batch = []
    if batch:
        yield from _scored(pipeline, batch, convention, mode)
