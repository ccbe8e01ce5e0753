"""The segmenter interface: SAM2 turning box + points into masks (paper §4: frozen SAM2-Large).

Split in two so the pipeline can encode the image while the policy is still decoding, and
reuse one encoding for several commands on the same frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend_info import BackendInfo
from ..core.answer import ObjectPrompt
from .tracking import Tracker, TrackingUnsupported


@dataclass
class ImageEncoding:
    """Opaque per-frame state (image embeddings and sizes) produced by :meth:`Segmenter.encode`."""

    width: int
    height: int
    state: Any


@dataclass
class SegmentedObject:
    mask: np.ndarray  # HxW bool, original resolution
    score: float


def check_rgb(image: Any) -> None:
    """ValueError unless ``image`` is what SAM2 takes: an HxWx3 uint8 RGB array, not empty."""
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    ):
        raise ValueError(
            "SAM2 expects an HxWx3 uint8 RGB image, got "
            f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}"
        )


class Segmenter(ABC):
    @abstractmethod
    def encode(self, image: np.ndarray) -> ImageEncoding:
        """Encode an HxWx3 uint8 RGB image at its original resolution."""

    @abstractmethod
    def decode(self, encoding: ImageEncoding, objects: list[ObjectPrompt]) -> list[SegmentedObject]:
        """One mask per object from its box and positive points (image pixels); multimask output,
        the highest-scoring mask kept (released evaluation.py)."""

    @abstractmethod
    def info(self) -> BackendInfo:
        """What was loaded (name, backend, device, dtype); never does I/O, never raises."""

    def tracker(self) -> Tracker:
        """A new tracker over this segmenter's SAM2 (one per tracked command; trackers share
        the loaded model). Raises :class:`~.tracking.TrackingUnsupported` with the reason
        where this backend or checkpoint cannot track."""
        raise TrackingUnsupported(f"{type(self).__name__} cannot track")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model (and GPU memory)."""
