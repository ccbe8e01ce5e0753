"""How a result is drawn, wherever one is shown (the node's ``mask`` and ``overlay`` topics, the
CLI's PNG files): the mask as a 0/255 image, and one overlay picture (tinted mask, each
object's box, points and score, the status and rationale on a dark band at the top). A tracked
frame is drawn the same way, its state and score in the band (``track_overlay``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .result import Result

if TYPE_CHECKING:
    from .tracking import TrackUpdate

MASK_COLOR = (30, 144, 255)  # RGB
MASK_ALPHA = 0.5
BOX_COLOR = (0, 255, 0)
POINT_COLOR = (255, 0, 255)
TEXT_COLOR = (255, 255, 255)


def mask_to_uint8(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` as uint8 of ``shape`` (height, width): 255 inside the object(s), 0 elsewhere
    (the Isaac ROS / yolo_ros convention). All zero without a mask of that shape (a failure),
    so every status can write a mask at the image's size."""
    if mask is None or mask.shape != tuple(shape):
        return np.zeros(shape, dtype=np.uint8)
    return np.ascontiguousarray(mask, dtype=bool).view(np.uint8) * np.uint8(255)


def overlay(image: np.ndarray, result: Result) -> np.ndarray:
    """A copy of ``image`` (HxWx3 uint8 RGB) with the result drawn on it; the input is not
    drawn on. Coordinates off the image (or not finite) are clipped to its edges."""
    out = np.ascontiguousarray(image.copy())
    _tint(out, result.mask)
    for obj in result.objects:
        _box(out, obj.box, obj.score, obj.points)
    _caption(
        out,
        f"{result.status.value} | #Tok {result.reasoning_tokens}",
        result.rationale or result.error,
    )
    return out


def track_overlay(image: np.ndarray, update: TrackUpdate, command: str = "") -> np.ndarray:
    """A copy of ``image`` with a tracked frame drawn on it: the tracked mask and each
    object's box and score, and the track's state, frame and score above the command."""
    out = np.ascontiguousarray(image.copy())
    step = update.step
    _tint(out, step.mask)
    for obj in step.objects:
        if obj.box is not None:
            _box(out, obj.box, obj.score)
    _caption(out, f"{update.state.value} | frame {step.index} | score {step.score:.2f}", command)
    return out


def _tint(out: np.ndarray, mask: np.ndarray | None) -> None:
    height, width = out.shape[:2]
    if mask is not None and mask.shape == (height, width) and mask.any():
        tint = np.array(MASK_COLOR, dtype=np.float32)
        region = out[mask].astype(np.float32)
        out[mask] = (region * (1.0 - MASK_ALPHA) + tint * MASK_ALPHA).astype(np.uint8)


def _box(
    out: np.ndarray, box: Sequence[float], score: float, points: Sequence[Sequence[float]] = ()
) -> None:
    import cv2

    height, width = out.shape[:2]
    thickness = max(1, round(min(width, height) / 300))
    x1, x2 = (_pixel(v, width) for v in (box[0], box[2]))
    y1, y2 = (_pixel(v, height) for v in (box[1], box[3]))
    cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, thickness)
    for x, y in points:
        center = (_pixel(x, width), _pixel(y, height))
        cv2.circle(out, center, 3 * thickness + 1, POINT_COLOR, -1)
    cv2.putText(
        out,
        f"{score:.2f}",
        (x1, max(y2 + 14, 14)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4 * thickness,
        BOX_COLOR,
        1,
        cv2.LINE_AA,
    )


def _pixel(value: float, size: int) -> int:
    """A coordinate as a pixel index inside ``size`` (0 for NaN and infinities)."""
    return int(min(max(round(value), 0), size - 1)) if math.isfinite(value) else 0


def _caption(out: np.ndarray, head: str, body: str) -> None:
    """``head`` and up to four wrapped lines of ``body`` on a dark band at the top."""
    import cv2

    height, width = out.shape[:2]
    scale = max(0.35, min(width, height) / 900)
    line_height = int(22 * scale) + 4
    chars = max(20, int(width / (10 * scale)))
    lines = [head, *textwrap.wrap(body, chars)[:4]]
    band = min(height, line_height * len(lines) + 6)
    out[:band] = (out[:band].astype(np.float32) * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(
            out,
            line,
            (4, line_height * (i + 1)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            TEXT_COLOR,
            1,
            cv2.LINE_AA,
        )
