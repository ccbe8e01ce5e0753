"""Segmentation and efficiency metrics: per-sample IoU, gIoU, cIoU and #Tok statistics.

gIoU = mean of per-sample IoU; cIoU = sum of intersections / sum of unions (LISA, Seg-Zero
``calculate_iou.py``). Two conventions differ at the edges; both are supported:

- ``"lisa"`` (default; LISA's ``intersectionAndUnionGPU`` with ``ignore_index=255``): pixels of
  the ground truth's "ignore" regions are left out of both masks, and a sample whose union is
  empty (empty target, empty prediction) scores IoU 1.
- ``"seg_zero"`` (Seg-Zero's converted datasets, ``mask.astype(bool)``): ignore regions count
  as target, and an empty union scores IoU 0.

An unparsable answer scores intersection 0 and union = ground-truth area in both (released
evaluation.py), i.e. it is an empty prediction. An empty prediction on an empty ground truth is
kept in both (IoU 1 or 0 by convention); the released evaluation.py drops that sample (its
``compute_iou`` returns a bare 0 that fails to unpack, and the sample is skipped).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Convention = Literal["lisa", "seg_zero"]
IGNORE_VALUE = 255  # LISA marks "ignore" polygons with 255 in the target mask


@dataclass(frozen=True)
class SampleScore:
    intersection: int
    union: int
    iou: float


def score_masks(
    pred: np.ndarray | None,
    target: np.ndarray,
    *,
    ignore: np.ndarray | None = None,
    convention: Convention = "lisa",
) -> SampleScore:
    """Intersection, union and IoU of one prediction (None: unparsable / no mask) vs. target.

    ``target`` is boolean (or 0/1); ``ignore`` marks LISA's ignore pixels (bool, same shape).
    """
    target = np.asarray(target).astype(bool)
    if pred is None:
        pred = np.zeros_like(target)
    pred = np.asarray(pred).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in size")
    if ignore is not None:
        ignore = np.asarray(ignore).astype(bool)
        if convention == "lisa":
            keep = ~ignore
            pred, target = pred & keep, target & keep
        else:
            target = target | ignore
    inter = int(np.logical_and(pred, target).sum())
    union = int(np.logical_or(pred, target).sum())
    if union == 0:
        iou = 1.0 if convention == "lisa" else 0.0
    else:
        iou = inter / union
    return SampleScore(inter, union, iou)


@dataclass
class SegmentationScores:
    """Accumulates samples; ``giou`` and ``ciou`` as the paper's tables report them (0..1)."""

    samples: list[SampleScore] = field(default_factory=list)

    def add(self, score: SampleScore) -> None:
        self.samples.append(score)

    @property
    def giou(self) -> float:
        return float(np.mean([s.iou for s in self.samples])) if self.samples else 0.0

    @property
    def ciou(self) -> float:
        union = sum(s.union for s in self.samples)
        return sum(s.intersection for s in self.samples) / union if union else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"gIoU": self.giou, "cIoU": self.ciou, "n": len(self.samples)}


def token_stats(counts: Iterable[int], bins: int = 20) -> dict[str, object]:
    """#Tok summary: mean (the paper's number), spread, percentiles and histogram data (Fig. 4)."""
    values = np.asarray(list(counts), dtype=float)
    if values.size == 0:
        return {
            "n": 0,
            "mean": 0.0,
            "std": 0.0,
            "median": 0.0,
            "p90": 0.0,
            "p95": 0.0,
            "min": 0,
            "max": 0,
            "histogram": {"edges": [], "counts": []},
        }
    hist, edges = np.histogram(values, bins=bins)
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "p95": float(np.percentile(values, 95)),
        "min": int(values.min()),
        "max": int(values.max()),
        "histogram": {"edges": edges.tolist(), "counts": hist.tolist()},
    }
