"""Baselines without learning, as policy backends, so the evaluator scores them through the same
pipeline (parser, frozen SAM2, gIoU/cIoU) as the trained policies.

They read the policy-frame image the way the scene world draws it (plain background, objects of
flat colours, same-coloured objects never touching): every region of one palette colour is one
object. Decided before any policy was trained, and not tuned after:

* ``largest``: the largest object, whatever the instruction says (the best answer that ignores
  the instruction: the scenes have no other bias a constant answer could use);
* ``named``: the object whose colour and shape words the instruction names first (largest on a
  tie, largest when it names none). Right on referring instructions, wrong on most relations
  ("the object closest to the blue square" names the blue square): what reading without
  reasoning gets.

Each answers with an empty ``<think>`` (#Tok 0) and the region's box and inscribed-circle points.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wise_perception.backend_info import BackendInfo
from wise_perception.core.prompts import PromptSpec
from wise_perception.policy.base import PolicyBackend, PolicyOutput
from wise_training.data import points_from_mask
from wise_training.scenes import COLOURS, SHAPES

KINDS = ("largest", "named")
MIN_REGION = 40  # pixels
_BACKGROUND_DISTANCE = 80.0  # RGB distance under which a pixel is background (the floor's
# stripes, scenes.FLOOR_STRIPE_AMPLITUDE in two channels, and its jitter move it up to ~40 from
# its median; palette colours are 140 or more away)


@dataclass(frozen=True)
class Region:
    colour: str
    shape: str
    mask: np.ndarray
    area: int


def _shape_of(mask: np.ndarray) -> str:
    """circle, square, triangle or cross from the region's fill of its box and its top half."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()
    top = box[: box.shape[0] // 2].sum() / max(box.sum(), 1)
    if fill > 0.9:
        return "square"
    if fill > 0.7:
        return "circle"
    return "triangle" if top < 0.4 else "cross"


def regions(image: np.ndarray) -> list[Region]:
    """The objects of a scene-world image: connected regions of one palette colour."""
    import cv2

    pixels = image.reshape(-1, 3).astype(np.float32)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    background = np.median(border, axis=0)
    palette = np.array(list(COLOURS.values()), np.float32)
    nearest = np.linalg.norm(pixels[:, None] - palette[None], axis=-1).argmin(axis=1)
    foreground = np.linalg.norm(pixels - background, axis=-1) > _BACKGROUND_DISTANCE
    labels = np.where(foreground, nearest, -1).reshape(image.shape[:2])
    found = []
    for index, colour in enumerate(COLOURS):
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            (labels == index).astype(np.uint8), connectivity=4
        )
        for k in range(1, count):
            if stats[k, cv2.CC_STAT_AREA] >= MIN_REGION:
                mask = components == k
                found.append(Region(colour, _shape_of(mask), mask, int(mask.sum())))
    return found


def _named(instruction: str, found: list[Region]) -> Region:
    words = re.findall(r"[a-z]+", instruction.lower())
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    by_size = sorted(found, key=lambda r: -r.area)
    for region in by_size:
        if colours and shapes and (region.colour, region.shape) == (colours[0], shapes[0]):
            return region
    for region in by_size:
        if (colours and region.colour == colours[0]) or (shapes and region.shape == shapes[0]):
            return region
    return by_size[0]


def answer(kind: str, image: np.ndarray, instruction: str) -> str:
    found = regions(image)
    if not found:
        return "<think></think><answer>no object</answer>"
    region = max(found, key=lambda r: r.area) if kind == "largest" else _named(instruction, found)
    ys, xs = np.nonzero(region.mask)
    (a, b), (c, d) = ([round(v) for v in p] for p in points_from_mask(region.mask))
    box = f"{xs.min()},{ys.min()},{xs.max()},{ys.max()}"
    return (
        f'<think></think><answer>{{"bbox": [{box}], "points_1": [{a},{b}], '
        f'"points_2": [{c},{d}]}}</answer>'
    )


class ScriptedPolicy(PolicyBackend):
    """A baseline of ``KINDS`` behind the policy backend interface."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown baseline {kind!r}; known: {KINDS}")
        self.kind = kind
        self.name = f"baseline:{kind}"
        self.tokenizer = None

    def generate(
        self,
        images: list[np.ndarray],
        instructions: list[str],
        *,
        spec: PromptSpec | None = None,
        stop: Sequence[str] = (),
    ) -> list[PolicyOutput]:
        outputs = []
        for image, instruction in zip(images, instructions, strict=True):
            start = time.perf_counter()
            text = answer(self.kind, image, _question(instruction))
            outputs.append(PolicyOutput(text, 0, decode_s=time.perf_counter() - start))
        return outputs

    def info(self) -> BackendInfo:
        return BackendInfo(name=self.name, backend="rule", device="cpu")


def _question(instruction: str) -> str:
    """The quoted question of a rendered instruction (``Please find '...' with bbox``)."""
    match = re.search(r"find ['\"](.*?)['\"] with bbox", instruction)
    return match.group(1) if match else instruction
