"""Segmenter backends (SAM2 through transformers; Meta's ``sam2`` package) behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import ImageEncoding, SegmentedObject, Segmenter

__all__ = ["ImageEncoding", "SegmentedObject", "Segmenter", "load_segmenter"]


def load_segmenter(
    segmenter: str | Path,
    *,
    backend: str = "auto",
    device: str | None = None,
    dtype: Any = None,
    **options: Any,
) -> Segmenter:
    """Load SAM2. ``backend="auto"``: a transformers folder or hub id (``Sam2Model`` +
    ``Sam2Processor``); a ``.pt`` file (Meta's ``sam2`` format) is refused with a clear error."""
    source = str(segmenter)
    if backend == "auto":
        backend = "sam2" if source.endswith(".pt") else "transformers"
    if backend == "transformers":
        from .sam2_transformers import Sam2TransformersSegmenter

        return Sam2TransformersSegmenter.from_pretrained(
            source, device=device, dtype=dtype, **options
        )
    if backend == "sam2":
        # Meta's ``sam2`` package (.pt checkpoints) is not supported yet: convert the checkpoint
        # to a transformers folder, or use the transformers-format SAM2 release.
        raise NotImplementedError(
            f"{source}: Meta sam2 .pt checkpoints are not supported yet; use a transformers SAM2 "
            "folder or id (Sam2Model + Sam2Processor, e.g. facebook/sam2.1-hiera-large)"
        )
    raise ValueError(f"unknown segmenter backend {backend!r}; choose transformers, sam2 or auto")
