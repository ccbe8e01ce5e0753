"""Segmenter backends (SAM2 through transformers; Meta's ``sam2`` package) behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import ImageEncoding, SegmentedObject, Segmenter
from .tracking import TrackedObject, Tracker, TrackingUnsupported, TrackStep

# Files that select the Meta sam2 backend under backend="auto" (Meta ships .pt files).
CHECKPOINT_SUFFIXES = (".pt", ".pth")

__all__ = [
    "BACKENDS",
    "ImageEncoding",
    "SegmentedObject",
    "Segmenter",
    "TrackStep",
    "TrackedObject",
    "Tracker",
    "TrackingUnsupported",
    "load_segmenter",
]

BACKENDS = ("transformers", "sam2")


def load_segmenter(
    segmenter: str | Path,
    *,
    backend: str = "auto",
    device: str | None = None,
    dtype: Any = None,
    **options: Any,
) -> Segmenter:
    """Load SAM2. ``backend="auto"``: a ``.pt`` file is a Meta ``sam2`` checkpoint
    (``Sam2MetaSegmenter``; ``config=`` in ``options`` when its name does not say the size),
    anything else a transformers folder or hub id (``Sam2Model`` + ``Sam2Processor``)."""
    source = str(segmenter)
    if backend == "auto":
        backend = "sam2" if source.lower().endswith(CHECKPOINT_SUFFIXES) else "transformers"
    if backend == "transformers":
        from .sam2_transformers import Sam2TransformersSegmenter

        return Sam2TransformersSegmenter.from_pretrained(
            source, device=device, dtype=dtype, **options
        )
    if backend == "sam2":
        from .sam2_meta import Sam2MetaSegmenter

        return Sam2MetaSegmenter.from_checkpoint(source, device=device, dtype=dtype, **options)
    raise ValueError(
        f"unknown segmenter backend {backend!r}; choose one of {', '.join(BACKENDS)} or auto"
    )
