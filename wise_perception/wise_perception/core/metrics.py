"""Segmentation metrics (paper §4): per-sample IoU, gIoU and cIoU, and box labels scored alike.

One implementation for the evaluator (``wise_training``, which adds the #Tok statistics) and
the product's bag replay (labelled commands): the numbers of both are the same by
construction, and a robot-side install scores labels without the training stack.

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

from collections.abc import Sequence
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


def box_mask(box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """``box`` (x1, y1, x2, y2 in pixels, corners inclusive as the policy's answers are) as a
    boolean mask of ``shape`` (height, width), clipped to the image: a box label or a predicted
    box is scored with :func:`score_masks` like a mask, so box gIoU/cIoU are pixel IoUs."""
    height, width = shape
    out = np.zeros((height, width), dtype=bool)
    x1, x2 = sorted((float(box[0]), float(box[2])))
    y1, y2 = sorted((float(box[1]), float(box[3])))
    left, top = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    right, bottom = min(int(np.floor(x2)) + 1, width), min(int(np.floor(y2)) + 1, height)
    if left < right and top < bottom:
        out[top:bottom, left:right] = True
    return out
