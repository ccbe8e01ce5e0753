"""Coordinates: the policy's resize protocol and box/point geometry shared by rewards and pipeline.

The policy sees every image resized to a fixed square (840x840 in the released code:
``image.resize((840, 840), BILINEAR)`` in evaluation.py; 840 = 30 x 28, so Qwen2.5-VL keeps it
whole as 900 visual tokens) and answers in that frame. Answers are mapped back to the original
image with ``round(x * W / 840)``, ``round(y * H / 840)`` (evaluation.py) and then clipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .answer import Box, ObjectPrompt, Point

POLICY_FRAME = 840  # released code's resize_size


@dataclass(frozen=True)
class ResizeProtocol:
    """How an image is shown to the policy: resized (not letterboxed) to ``size`` x ``size``."""

    size: int = POLICY_FRAME

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % 28:
            # Qwen2.5-VL works on 28 px cells (14 px patches merged 2x2); other sizes get re-resized.
            raise ValueError(f"policy frame must be a positive multiple of 28, got {self.size}")

    def resize(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> size x size x 3 with PIL's bilinear filter, as the release does
        (``image.resize((840, 840), BILINEAR)``). PIL's filter antialiases when shrinking
        (OpenCV's INTER_LINEAR does not): released checkpoints saw PIL's pixels."""
        from PIL import Image

        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        if image.shape[0] == self.size and image.shape[1] == self.size:
            # torch warns on (and may not wrap) read-only arrays, PIL's np.asarray among them
            return image if image.flags.writeable else image.copy()
        resized = Image.fromarray(np.ascontiguousarray(image)).resize(
            (self.size, self.size), Image.Resampling.BILINEAR
        )
        return np.array(resized)  # writable: the processors turn it into a tensor

    def _scale(self, width: int, height: int) -> tuple[float, float]:
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        return width / self.size, height / self.size

    def box_to_image(self, box: Sequence[float], width: int, height: int) -> Box:
        sx, sy = self._scale(width, height)
        x1, y1, x2, y2 = box
        return (
            _clip(round(x1 * sx), width),
            _clip(round(y1 * sy), height),
            _clip(round(x2 * sx), width),
            _clip(round(y2 * sy), height),
        )

    def point_to_image(self, point: Sequence[float], width: int, height: int) -> Point:
        sx, sy = self._scale(width, height)
        return (_clip(round(point[0] * sx), width), _clip(round(point[1] * sy), height))

    def object_to_image(self, obj: ObjectPrompt, width: int, height: int) -> ObjectPrompt:
        return ObjectPrompt(
            box=self.box_to_image(obj.box, width, height),
            points=tuple(self.point_to_image(p, width, height) for p in obj.points),
        )

    def box_to_policy(self, box: Sequence[float], width: int, height: int) -> Box:
        """Ground truth in image pixels -> the policy frame (for training targets)."""
        sx, sy = self._scale(width, height)
        x1, y1, x2, y2 = box
        return (x1 / sx, y1 / sy, x2 / sx, y2 / sy)

    def point_to_policy(self, point: Sequence[float], width: int, height: int) -> Point:
        sx, sy = self._scale(width, height)
        return (point[0] / sx, point[1] / sy)


def _clip(value: float, extent: int) -> int:
    return int(min(max(value, 0), extent - 1))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Box IoU with pixel-inclusive areas (+1), as the released reward (seg_restrict.py) computes it.

    Boxes that only touch (x1 == x2 of the overlap) count as disjoint there; kept for parity.
    """
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0.0
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    union = area_a + area_b - inter
    return float(inter) / union if union > 0 else 0.0


def box_l1(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean absolute difference of the four coordinates (released seg_box_l1_reward)."""
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / 4.0


def point_in_box(point: Sequence[float], box: Sequence[float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def mean_point_distance(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> float:
    """Order-invariant mean distance between two point pairs (released seg_point_l1_reward)."""
    if len(pred) != 2 or len(gt) != 2:
        raise ValueError("point distance is defined for two points on each side")

    def dist(p: Sequence[float], q: Sequence[float]) -> float:
        return math.hypot(p[0] - q[0], p[1] - q[1])

    straight = dist(pred[0], gt[0]) + dist(pred[1], gt[1])
    swapped = dist(pred[0], gt[1]) + dist(pred[1], gt[0])
    return min(straight, swapped) / 2.0
