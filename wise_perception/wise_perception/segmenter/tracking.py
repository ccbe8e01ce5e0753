"""The tracker interface: SAM2's video memory following the objects of one answer, frame by frame.

Reason once, then track: after the policy has answered on one frame, a tracker is seeded there
with the answer's boxes and points (or its masks) and then takes each newer frame and returns
the objects' masks, boxes and scores. It keeps a fixed number of memory frames (SAM2's memory
bank), so its state does not grow with the length of the stream.

No ROS and no torch at module level: the node, the CLI and the benchmark use these types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.answer import Box, ObjectPrompt


class TrackingUnsupported(RuntimeError):
    """This segmenter (or checkpoint) cannot track; the message says why and what to use."""


@dataclass
class TrackedObject:
    """One object on one frame, in original image pixels."""

    mask: np.ndarray = field(repr=False)  # HxW bool
    box: Box | None  # tight box of the mask, pixel-inclusive (x1, y1, x2, y2); None when empty
    score: float  # probability that the object is visible (SAM2's object score, sigmoid)


@dataclass
class TrackStep:
    """What a tracker says about one frame."""

    index: int  # frames since the seed frame (0: the seed frame itself)
    objects: list[TrackedObject]
    mask: np.ndarray = field(repr=False)  # HxW bool, union of the objects' masks
    seconds: float = 0.0  # the whole step: preprocessing, encoder, memory, decoder, masks

    @property
    def score(self) -> float:
        """The track's score: its most visible object's (a multi-object answer is still being
        followed while any of its objects is seen); 0.0 without objects."""
        return max((obj.score for obj in self.objects), default=0.0)

    @property
    def box(self) -> Box | None:
        """The box around every visible object's mask (None when no mask pixel is set)."""
        boxes = [obj.box for obj in self.objects if obj.box is not None]
        if not boxes:
            return None
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )


@dataclass(frozen=True)
class MemoryInfo:
    """What a tracker holds: the frames in its memory bank and the bytes of its whole state."""

    conditioning_frames: int  # seed frames (prompted), kept for the whole track
    memory_frames: int  # tracked frames whose memory (or object pointer) is kept
    state_bytes: int  # every tensor the tracker's session holds


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight pixel-inclusive box (x1, y1, x2, y2) of a boolean mask; None when it is empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))


class Tracker(ABC):
    """Follows the objects of one answer through newer frames. Not thread-safe: one caller
    (the pipeline's tracking session, the CLI's loop) drives it."""

    @abstractmethod
    def start(
        self,
        image: np.ndarray,
        objects: Sequence[ObjectPrompt],
        masks: Sequence[np.ndarray] | None = None,
    ) -> TrackStep:
        """Seed on ``image`` (HxWx3 uint8 RGB), the frame the answer was given on: with each
        object's box and points (image pixels), or with ``masks`` (one HxW bool mask per
        object) when given. Returns the seed frame's step (index 0). A second ``start``
        forgets the previous track."""

    @abstractmethod
    def step(self, image: np.ndarray) -> TrackStep:
        """The objects on the next frame (same size as the seed frame)."""

    @abstractmethod
    def memory(self) -> MemoryInfo:
        """What the tracker holds now (bounded: it does not grow with the stream)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Drop the track's state."""
