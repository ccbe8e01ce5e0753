"""Segmentation and efficiency metrics: per-sample IoU, gIoU, cIoU and #Tok statistics.

gIoU/cIoU and their conventions live in the product's core (:mod:`wise_perception.core.metrics`,
re-exported here) so that the evaluator and the bag replay score with one implementation;
#Tok statistics are the evaluator's own.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from wise_perception.core.metrics import (
    IGNORE_VALUE,
    Convention,
    SampleScore,
    SegmentationScores,
    score_masks,
)

__all__ = [
    "IGNORE_VALUE",
    "Convention",
    "SampleScore",
    "SegmentationScores",
    "score_masks",
    "token_stats",
]


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
