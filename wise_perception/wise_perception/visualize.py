"""How a result is drawn, wherever one is shown (the node's ``mask`` and ``overlay`` topics, the
CLI's PNG files): the mask as a 0/255 image, and one overlay picture (tinted mask, each
object's box, points and score, the status and rationale on a dark band at the top).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from .result import Result

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
    import cv2

    out = np.ascontiguousarray(image.copy())
    height, width = out.shape[:2]
    if result.mask is not None and result.mask.shape == (height, width) and result.mask.any():
        tint = np.array(MASK_COLOR, dtype=np.float32)
        region = out[result.mask].astype(np.float32)
        out[result.mask] = (region * (1.0 - MASK_ALPHA) + tint * MASK_ALPHA).astype(np.uint8)
    thickness = max(1, round(min(width, height) / 300))
    for obj in result.objects:
        x1, x2 = (_pixel(v, width) for v in (obj.box[0], obj.box[2]))
        y1, y2 = (_pixel(v, height) for v in (obj.box[1], obj.box[3]))
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, thickness)
        for x, y in obj.points:
            center = (_pixel(x, width), _pixel(y, height))
            cv2.circle(out, center, 3 * thickness + 1, POINT_COLOR, -1)
        cv2.putText(
            out,
            f"{obj.score:.2f}",
            (x1, max(y2 + 14, 14)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            BOX_COLOR,
            1,
            cv2.LINE_AA,
        )
    _caption(out, result)
    return out


def _pixel(value: float, size: int) -> int:
    """A coordinate as a pixel index inside ``size`` (0 for NaN and infinities)."""
    return int(min(max(round(value), 0), size - 1)) if math.isfinite(value) else 0


def _caption(out: np.ndarray, result: Result) -> None:
    import cv2

    height, width = out.shape[:2]
    scale = max(0.35, min(width, height) / 900)
    line_height = int(22 * scale) + 4
    chars = max(20, int(width / (10 * scale)))
    head = f"{result.status.value} | #Tok {result.reasoning_tokens}"
    body = result.rationale or result.error
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
