"""Overlay drawing for results (CLI output, debugging): tinted mask, boxes, points, rationale."""

from __future__ import annotations

import textwrap

import numpy as np

from .result import Result

MASK_COLOR = (30, 144, 255)  # RGB
BOX_COLOR = (0, 255, 0)
POINT_COLOR = (255, 0, 255)
TEXT_COLOR = (255, 255, 255)


def mask_png(result: Result, shape: tuple[int, int]) -> np.ndarray:
    """The union mask as a uint8 0/255 image of ``shape`` (height, width): all zero when the
    result has none (a failure), so every status writes a mask at the image's size."""
    if result.mask is None or result.mask.shape != tuple(shape):
        return np.zeros(shape, dtype=np.uint8)
    return result.mask.astype(np.uint8) * 255


def overlay(
    image: np.ndarray, result: Result, *, alpha: float = 0.5, text: bool = True
) -> np.ndarray:
    """A copy of ``image`` (HxWx3 uint8 RGB) with the mask tinted, each object's box and
    points drawn, and the status + rationale written on a dark band at the top."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    height, width = out.shape[:2]
    if result.mask is not None and result.mask.shape == (height, width) and result.mask.any():
        tint = np.array(MASK_COLOR, dtype=np.float32)
        region = out[result.mask].astype(np.float32)
        out[result.mask] = (region * (1.0 - alpha) + tint * alpha).astype(np.uint8)
    thickness = max(1, round(min(width, height) / 300))
    for obj in result.objects:
        x1, y1, x2, y2 = (round(float(v)) for v in obj.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, thickness)
        for x, y in obj.points:
            cv2.circle(out, (round(float(x)), round(float(y))), 3 * thickness + 1, POINT_COLOR, -1)
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
    if text:
        _caption(out, result)
    return out


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
