"""A synthetic reasoning-segmentation world: scenes of coloured shapes with exact masks, and
instructions of graded difficulty whose answer is exactly one object.

It checks a training set-up end to end where no real data can be had (offline, on a CPU): the
scenes are written in the formats the trainer (``wise_training.data``) and the evaluator
(``wise_training.evaluate``, format ``jsonl``) read, with the ground truth Seg-Zero's recipe
asks for (the visible mask, its box and the centres of its two largest inscribed circles).

    python -m wise_training.scenes --out data/scenes --train 2000 --val 100 --test 200

writes ``images/``, ``masks/`` (0/255 PNG of each instruction's target) and one JSONL per
split. A line (coordinates in image pixels, x right, y down; boxes inclusive)::

    {"image": "images/test_00007.png", "mask": "masks/test_00007.png",
     "instruction": "the object closest to the blue square", "box": [x1, y1, x2, y2],
     "points": [[x, y], [x, y]], "family": "closest_to", "level": 3, "held_out": false,
     "target": 2, "reference": 0, "objects": [{"shape": "square", "colour": "blue", ...}, ...]}

**Scenes.** 3-5 objects (``SHAPES`` x ``COLOURS``, sizes from small to large) on a light
background, drawn one after another so later objects may hide part of earlier ones (each keeps at
least ``MIN_VISIBLE`` of its area; objects of the same colour never touch, so every object is one
region of its colour). Everything is exact: no anti-aliasing, every mask is the object's visible
pixels. The floor is printed like a calibration mat (``FLOOR_STRIPES``): fine stripes whose
period names the column (red channel) and the row (blue channel) of the cell they lie in.
Qwen2.5-VL places image tokens by rotary positions only, from which a model learns absolute
coordinates from a great deal of data; a small model trained from random weights on a CPU budget
reads them from the pattern around an object instead (measured in ``wise_dev.reproduce``: with
a smooth tint ramp the stand-in learned where a lone object is more slowly and less well).

**Instructions** (``FAMILIES``), every one checked to pick exactly one object with a clear margin
(positions, sizes and distances differ by at least ``MARGIN_PX`` / ``SIZE_RATIO``):
level 1 referring ("the red triangle", "the circle", "the blue object"); level 2 comparison
("the leftmost object", "the largest object", "the smallest square"); level 3 reasoning
("the object closest to the blue square", "the shape with the same colour as the circle but a
different shape", "the second largest object", ...).

**Splits** are seeded per scene (``seed``, split, index), so a split never depends on another's
size. ``train`` and ``val`` draw from the training families only; ``test`` draws half of its
instructions from held-out families (``held_out: true``): colour-shape pairs never named in a
training instruction, size superlatives composed with a filter they never met in training, a
relation composed with a colour filter, and a paraphrase, as the paper trains on RefCOCOg and
tests out of domain on ReasonSeg.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CANVAS = 168  # a multiple of 28 (Qwen2.5-VL's 28 px cells): the image is its own policy frame
GRID = 3  # objects sit in the cells of a GRID x GRID layout, one per cell, off-centre
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (212, 46, 46),
    "green": (46, 156, 70),
    "blue": (50, 92, 214),
    "yellow": (232, 194, 40),
    "purple": (138, 66, 178),
}
# The floor: one grey, printed with stripes whose period (px) names the cell's column (vertical
# stripes, red channel) and row (horizontal stripes, blue channel). Measured on "where is the
# object?" with one object per scene, 1.5 M policy (its processor normalised to this floor), 250
# SFT steps: 19 of 40 held-out scenes right with these stripes against 13-16 with the former
# smooth tint ramp (80 levels); 9 places, chance 4-5. Patches are 14 px, so every period
# divides a patch or a 28 px token.
FLOOR: tuple[int, int, int] = (200, 200, 200)
FLOOR_STRIPES: tuple[int, ...] = (2, 4, 14)  # period per column / row of the GRID
FLOOR_STRIPE_AMPLITUDE = 24
COLOUR_JITTER = 14  # per object and channel, so a colour is a category, not one exact value
MIN_OBJECTS, MAX_OBJECTS = 3, 5
MIN_SCALE, MAX_SCALE = 10, 22  # half-size of a shape in pixels (at CANVAS 168)
JITTER = 2  # px an object's centre may stray from its cell's centre (at CANVAS 168)
MIN_VISIBLE = 0.7  # share of an object's own area that stays visible when others overlap it
MIN_VISIBLE_PIXELS = 150
SAME_COLOUR_GAP = 4  # px between objects of one colour (each stays one region of its colour)
MARGIN_PX = 12  # distances compared by an instruction differ by at least this
POSITION_MARGIN_PX = 24  # positions compared by an instruction: a column or row apart
SIZE_RATIO = 1.25  # areas compared by an instruction differ by at least this factor
MAX_SCENE_TRIES = 200
SPLITS: tuple[str, ...] = ("train", "val", "test")
HELD_OUT_SHARE = 0.5  # of the test instructions
MAX_SAMPLES_PER_SPLIT = 100_000
MARKER = "scenes.json"  # written last; marks a complete scenes folder (safe to clear)

# Colour-shape pairs never named by a training instruction ("the blue triangle"): they appear in
# training scenes, and test asks for them by name (compositional generalisation).
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("blue", "triangle"), ("yellow", "circle"), ("red", "cross"), ("green", "square")}
)
# Size superlatives composed with a filter: training asks "the largest <shape>" and "the smallest
# <colour> object"; test asks the other two compositions.
TRAIN_SIZE_FILTERS: frozenset[tuple[str, str]] = frozenset(
    {("largest", "shape"), ("smallest", "colour")}
)

_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}


# --------------------------------------------------------------------------- scenes


@dataclass
class SceneObject:
    shape: str
    colour: str
    centre: tuple[int, int]
    scale: int
    area: int  # pixels of the whole shape (what "largest" compares)
    size_word: str = ""  # small, medium or large (a third of the scale range each)
    visible_area: int = 0
    box: list[int] = field(default_factory=list)  # visible mask's box, inclusive pixels
    points: list[list[float]] = field(default_factory=list)  # two inscribed-circle centres

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def position(self, size: int = CANVAS) -> str:
        """Where it is, in words: one of nine regions of the image."""
        x, y = self.centre
        col = ("left", "", "right")[min(2, 3 * x // size)]
        row = ("top", "", "bottom")[min(2, 3 * y // size)]
        return " ".join(p for p in (row, col) if p) or "centre"

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "centre": list(self.centre), "position": self.position()}


@dataclass
class Scene:
    image: np.ndarray  # HxWx3 uint8 RGB
    objects: list[SceneObject]
    visible: list[np.ndarray]  # HxW bool per object


def _shape_mask(shape: str, centre: tuple[int, int], scale: int, size: int) -> np.ndarray:
    import cv2

    mask = np.zeros((size, size), np.uint8)
    x, y = centre
    s = scale
    if shape == "circle":
        cv2.circle(mask, (x, y), s, 1, -1, lineType=cv2.LINE_8)
    elif shape == "square":
        h = round(s * 0.88)  # about the area of the circle of the same scale
        mask[max(0, y - h) : y + h + 1, max(0, x - h) : x + h + 1] = 1
    elif shape == "triangle":
        h = round(s * 1.15)
        pts = np.array([[x, y - h], [x - h, y + round(h * 0.8)], [x + h, y + round(h * 0.8)]])
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1, lineType=cv2.LINE_8)
    elif shape == "cross":
        arm, half = round(s * 1.05), max(3, round(s * 0.38))
        mask[max(0, y - half) : y + half + 1, max(0, x - arm) : x + arm + 1] = 1
        mask[max(0, y - arm) : y + arm + 1, max(0, x - half) : x + half + 1] = 1
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return mask.astype(bool)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def make_scene(
    rng: np.random.Generator, size: int = CANVAS, object_count: int | None = None
) -> Scene:
    """One scene: objects placed at random, re-drawn until every constraint holds;
    ``object_count`` of them (default: ``MIN_OBJECTS`` to ``MAX_OBJECTS``, drawn per try)."""
    from .data import points_from_mask

    if size <= 0 or size % 28:
        raise ValueError(f"the canvas must be a positive multiple of 28, got {size}")
    if object_count is not None and not 1 <= object_count <= GRID * GRID:
        raise ValueError(f"a scene holds 1 to {GRID * GRID} objects, got {object_count}")
    factor = size / CANVAS
    for _ in range(MAX_SCENE_TRIES):
        count = object_count or int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        objects: list[SceneObject] = []
        full: list[np.ndarray] = []
        cells = [int(c) for c in rng.choice(GRID * GRID, size=count * 3, replace=True)]
        for cell in cells:
            if len(objects) == count:
                break
            if any(o.position(size) == _cell_position(cell) for o in objects):
                continue  # one object per cell
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            band = int(rng.integers(MIN_SCALE, MAX_SCALE + 1))
            scale = round(band * factor)
            step = size / GRID
            jitter = rng.integers(-JITTER, JITTER + 1, 2) * factor
            centre = (
                round((cell % GRID + 0.5) * step + jitter[0]),
                round((cell // GRID + 0.5) * step + jitter[1]),
            )
            mask = _shape_mask(shape, centre, scale, size)
            clash = any(
                o.colour == colour and (_dilate(m, SAME_COLOUR_GAP) & mask).any()
                for o, m in zip(objects, full, strict=True)
            )
            if clash:
                continue
            third = (MAX_SCALE - MIN_SCALE + 1) / 3
            size_word = ("small", "medium", "large")[min(2, int((band - MIN_SCALE) / third))]
            objects.append(SceneObject(shape, colour, centre, scale, int(mask.sum()), size_word))
            full.append(mask)
        if len(objects) != count:
            continue
        visible = []
        for i, mask in enumerate(full):
            hidden = np.zeros_like(mask)
            for later in full[i + 1 :]:
                hidden |= later
            visible.append(mask & ~hidden)
        if any(
            v.sum() < MIN_VISIBLE * o.area or v.sum() < MIN_VISIBLE_PIXELS * factor**2
            for o, v in zip(objects, visible, strict=True)
        ):
            continue
        image = floor(size) + rng.integers(-4, 5, 3).astype(np.int16)
        for obj, v in zip(objects, visible, strict=True):
            colour = np.array(COLOURS[obj.colour], np.int16)
            image[v] = colour + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)
            ys, xs = np.nonzero(v)
            obj.visible_area = int(v.sum())
            obj.box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
            obj.points = [[round(c, 1) for c in p] for p in points_from_mask(v)]
        return Scene(np.clip(image, 0, 255).astype(np.uint8), objects, visible)
    raise RuntimeError(f"no scene met the constraints in {MAX_SCENE_TRIES} tries")


def floor(size: int = CANVAS) -> np.ndarray:
    """The empty floor (``size`` x ``size`` x 3, int16): grey with the cell-naming stripes."""
    periods = np.array(FLOOR_STRIPES)
    at = np.arange(size)
    period = periods[np.minimum(at * GRID // size, GRID - 1)]
    stripes = np.where(at % period < period // 2, 1, -1) * FLOOR_STRIPE_AMPLITUDE
    image = np.empty((size, size, 3), np.int16)
    image[:] = np.array(FLOOR, np.int16)
    image[..., 0] += stripes[None, :].astype(np.int16)  # columns
    image[..., 2] += stripes[:, None].astype(np.int16)  # rows
    return image


def _cell_position(cell: int) -> str:
    col = ("left", "", "right")[cell % GRID]
    row = ("top", "", "bottom")[cell // GRID]
    return " ".join(p for p in (row, col) if p) or "centre"


# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    text: str
    target: int
    family: str
    level: int
    held_out: bool = False
    reference: int | None = None  # the object the instruction names to relate to, if any
    detail: dict[str, Any] = field(default_factory=dict)  # what the family compared


Family = Callable[[list[SceneObject], np.random.Generator], Instruction | None]


def _unique(objects: list[SceneObject], key: Callable[[SceneObject], Any]) -> list[int]:
    """Indices of the objects whose ``key`` no other object shares."""
    values = [key(o) for o in objects]
    return [i for i, v in enumerate(values) if values.count(v) == 1]


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _extreme(values: Sequence[float], margin: float, ratio: float = 1.0) -> int | None:
    """Index of the largest value when it beats the runner-up by ``margin`` and ``ratio``."""
    if len(values) < 2:
        return None
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)
    best, second = values[order[0]], values[order[1]]
    if best - second >= margin and best >= ratio * second:
        return order[0]
    return None


def _distance(a: SceneObject, b: SceneObject) -> float:
    return math.dist(a.centre, b.centre)


def _colour_shape(held_out: bool) -> Family:
    def family(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
        ids = [
            i
            for i in _unique(objects, lambda o: (o.colour, o.shape))
            if ((objects[i].colour, objects[i].shape) in HELD_OUT_PAIRS) == held_out
        ]
        if not ids:
            return None
        i = _pick(rng, ids)
        name = "colour_shape_unseen" if held_out else "colour_shape"
        return Instruction(f"the {objects[i].name}", i, name, 1, held_out)

    return family


def _shape_only(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
    ids = _unique(objects, lambda o: o.shape)
    if not ids:
        return None
    i = _pick(rng, ids)
    return Instruction(f"the {objects[i].shape}", i, "shape_only", 1)


def _colour_only(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
    ids = _unique(objects, lambda o: o.colour)
    if not ids:
        return None
    i = _pick(rng, ids)
    return Instruction(f"the {objects[i].colour} object", i, "colour_only", 1)


_POSITIONS: dict[str, Callable[[SceneObject], float]] = {
    "leftmost": lambda o: -o.centre[0],
    "rightmost": lambda o: o.centre[0],
    "topmost": lambda o: -o.centre[1],
    "lowest": lambda o: o.centre[1],
}


def _extreme_position(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
    word = _pick(rng, list(_POSITIONS))
    i = _extreme([_POSITIONS[word](o) for o in objects], POSITION_MARGIN_PX)
    if i is None:
        return None
    return Instruction(f"the {word} object", i, "extreme_position", 2, detail={"word": word})


def _superlative(
    objects: list[SceneObject], ids: list[int], word: str, ratio: float = SIZE_RATIO
) -> int | None:
    sign = 1.0 if word == "largest" else -1.0
    # Compared as areas for "largest", as inverse areas for "smallest": ratio holds both ways.
    values = [objects[i].area if sign > 0 else 1e6 / objects[i].area for i in ids]
    best = _extreme(values, 0.0, ratio)
    return None if best is None else ids[best]


def _extreme_size(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
    word = _pick(rng, ("largest", "smallest"))
    i = _superlative(objects, list(range(len(objects))), word)
    if i is None:
        return None
    return Instruction(f"the {word} object", i, "extreme_size", 2, detail={"word": word})


def _size_within(held_out: bool) -> Family:
    def family(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
        word = _pick(rng, ("largest", "smallest"))
        kind = _pick(rng, ("shape", "colour"))
        if ((word, kind) in TRAIN_SIZE_FILTERS) == held_out:
            return None
        value = _pick(rng, [getattr(o, kind) for o in objects])
        ids = [i for i, o in enumerate(objects) if getattr(o, kind) == value]
        if len(ids) < 2:
            return None
        i = _superlative(objects, ids, word)
        if i is None:
            return None
        text = f"the {word} {value}" if kind == "shape" else f"the {word} {value} object"
        name = "size_within_unseen" if held_out else "size_within"
        detail = {"word": word, "kind": kind, "value": value, "among": ids}
        return Instruction(text, i, name, 2, held_out, detail=detail)

    return family


def _second_largest(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
    if len(objects) < 3:
        return None
    order = sorted(range(len(objects)), key=lambda i: objects[i].area, reverse=True)
    a, b, c = (objects[i].area for i in order[:3])
    if a < SIZE_RATIO * b or b < SIZE_RATIO * c:
        return None
    detail = {"largest": order[0]}
    return Instruction("the second largest object", order[1], "second_largest", 3, detail=detail)


def _reference(objects: list[SceneObject], rng: np.random.Generator) -> int | None:
    """An object the instruction can name unambiguously by colour and shape."""
    ids = _unique(objects, lambda o: (o.colour, o.shape))
    return _pick(rng, ids) if ids else None


def _by_distance(objects: list[SceneObject], ref: int, ids: list[int], closest: bool) -> int | None:
    sign = -1.0 if closest else 1.0
    values = [sign * _distance(objects[i], objects[ref]) for i in ids]
    best = _extreme(values, MARGIN_PX)
    if best is None:
        return None
    if closest:  # nearest clearly nearer: the runner-up at least SIZE_RATIO times as far
        ranked = sorted(-v for v in values)
        if ranked[1] < SIZE_RATIO * ranked[0]:
            return None
    return ids[best]


def _relation(closest: bool) -> Family:
    word = "closest to" if closest else "farthest from"

    def family(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
        ref = _reference(objects, rng)
        if ref is None:
            return None
        others = [i for i in range(len(objects)) if i != ref]
        i = _by_distance(objects, ref, others, closest)
        if i is None:
            return None
        name = "closest_to" if closest else "farthest_from"
        text = f"the object {word} the {objects[ref].name}"
        return Instruction(text, i, name, 3, reference=ref)

    return family


def _colour_closest(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
    ref = _reference(objects, rng)
    if ref is None:
        return None
    colour = _pick(rng, [o.colour for i, o in enumerate(objects) if i != ref])
    ids = [i for i, o in enumerate(objects) if i != ref and o.colour == colour]
    if len(ids) < 2:
        return None
    i = _by_distance(objects, ref, ids, closest=True)
    if i is None:
        return None
    text = f"the {colour} object closest to the {objects[ref].name}"
    detail = {"colour": colour, "among": ids}
    return Instruction(text, i, "colour_closest", 3, True, ref, detail)


def _same_colour(paraphrase: bool) -> Family:
    def family(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
        refs = _unique(objects, lambda o: o.shape)
        if not refs:
            return None
        ref = _pick(rng, refs)
        r = objects[ref]
        ids = [
            i
            for i, o in enumerate(objects)
            if i != ref and o.colour == r.colour and o.shape != r.shape
        ]
        if len(ids) != 1:
            return None
        if paraphrase:
            text = f"the object that shares the colour of the {r.shape} but is not a {r.shape}"
            return Instruction(text, ids[0], "same_colour_paraphrase", 3, True, ref)
        text = f"the shape with the same colour as the {r.shape} but a different shape"
        return Instruction(text, ids[0], "same_colour", 3, reference=ref)

    return family


def _same_shape(objects: list[SceneObject], rng: np.random.Generator) -> Instruction | None:
    ref = _reference(objects, rng)
    if ref is None:
        return None
    r = objects[ref]
    ids = [
        i for i, o in enumerate(objects) if i != ref and o.shape == r.shape and o.colour != r.colour
    ]
    if len(ids) != 1:
        return None
    text = f"the object with the same shape as the {r.name} but a different colour"
    return Instruction(text, ids[0], "same_shape", 3, reference=ref)


# name -> (family, sampling weight); training families first, then the held-out ones.
FAMILIES: dict[str, tuple[Family, float]] = {
    "colour_shape": (_colour_shape(held_out=False), 1.4),
    "shape_only": (_shape_only, 0.8),
    "colour_only": (_colour_only, 0.8),
    "extreme_position": (_extreme_position, 1.0),
    "extreme_size": (_extreme_size, 1.0),
    "size_within": (_size_within(held_out=False), 0.8),
    "second_largest": (_second_largest, 0.8),
    "closest_to": (_relation(closest=True), 1.0),
    "farthest_from": (_relation(closest=False), 0.7),
    "same_colour": (_same_colour(paraphrase=False), 1.0),
    "same_shape": (_same_shape, 0.8),
}
HELD_OUT_FAMILIES: dict[str, tuple[Family, float]] = {
    "colour_shape_unseen": (_colour_shape(held_out=True), 1.0),
    "size_within_unseen": (_size_within(held_out=True), 1.0),
    "colour_closest": (_colour_closest, 1.0),
    "same_colour_paraphrase": (_same_colour(paraphrase=True), 1.0),
}
MAX_INSTRUCTION_TRIES = 50


def make_instruction(
    objects: list[SceneObject], rng: np.random.Generator, families: dict[str, tuple[Family, float]]
) -> Instruction | None:
    """An instruction of a family drawn by weight (families that do not fit are redrawn)."""
    names = list(families)
    weights = np.array([families[n][1] for n in names])
    for _ in range(MAX_INSTRUCTION_TRIES):
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        instruction = families[name][0](objects, rng)
        if instruction is not None:
            return instruction
    return None


# --------------------------------------------------------------------------- splits on disk


@dataclass(frozen=True)
class Sample:
    scene: Scene
    instruction: Instruction


def make_sample(seed: int, split: str, index: int, size: int = CANVAS) -> Sample:
    """The ``index``-th sample of ``split``: the same for the same arguments, on any machine."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    held_out = split == "test" and rng.random() < HELD_OUT_SHARE
    return draw_sample(rng, HELD_OUT_FAMILIES if held_out else FAMILIES, size)


def draw_sample(
    rng: np.random.Generator, families: dict[str, tuple[Family, float]], size: int = CANVAS
) -> Sample:
    """A scene and an instruction of ``families`` for it (a scene none fits is redrawn)."""
    while True:
        scene = make_scene(rng, size)
        instruction = make_instruction(scene.objects, rng, families)
        if instruction is not None:
            return Sample(scene, instruction)


def sample_record(sample: Sample, image: str, mask: str) -> dict[str, Any]:
    """The JSONL line of a sample (paths relative to the JSONL file)."""
    ins = sample.instruction
    target = sample.scene.objects[ins.target]
    return {
        "image": image,
        "mask": mask,
        "instruction": ins.text,
        "box": target.box,
        "points": target.points,
        "family": ins.family,
        "level": ins.level,
        "held_out": ins.held_out,
        "target": ins.target,
        "reference": ins.reference,
        "detail": ins.detail,
        "objects": [o.record() for o in sample.scene.objects],
    }


def _prepare_folder(out: Path) -> None:
    """An empty folder for a new set: a previous scenes folder is cleared (no stale images stay
    behind); any other non-empty folder is refused."""
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} is a file")
        if any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise FileExistsError(
                    f"{out} is not empty and holds no scenes set ({MARKER}); choose a new folder"
                )
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def write_scenes(
    out: str | Path,
    counts: dict[str, int],
    *,
    seed: int = 0,
    size: int = CANVAS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Path]:
    """Write the splits of ``counts`` (split -> samples) into ``out``; returns split -> JSONL.

    ``progress`` is called with the number of samples written so far."""
    from PIL import Image

    for split, n in counts.items():
        if split not in _SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
        if not 0 <= n <= MAX_SAMPLES_PER_SPLIT:
            raise ValueError(f"{split}: between 0 and {MAX_SAMPLES_PER_SPLIT} samples, got {n}")
    out = Path(out)
    _prepare_folder(out)
    (out / "images").mkdir()
    (out / "masks").mkdir()
    paths, done = {}, 0
    for split, n in counts.items():
        lines = []
        for index in range(n):
            sample = make_sample(seed, split, index, size)
            image, mask = f"images/{split}_{index:05d}.png", f"masks/{split}_{index:05d}.png"
            Image.fromarray(sample.scene.image).save(out / image)
            target = sample.scene.visible[sample.instruction.target]
            Image.fromarray(target.astype(np.uint8) * 255).save(out / mask)
            lines.append(json.dumps(sample_record(sample, image, mask)))
            done += 1
            if progress is not None:
                progress(done)
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    info = {"seed": seed, "size": size, "counts": counts, "format": 1}
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return paths


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a split's JSONL."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_training.scenes",
        description="Write the synthetic reasoning-segmentation world: images, target masks and "
        "train/val/test JSONL that wise_training.train and wise_training.evaluate read.",
    )
    parser.add_argument("--out", type=Path, required=True, help="a new (or a scenes) folder")
    for split, default in (("train", 2000), ("val", 100), ("test", 200)):
        parser.add_argument(f"--{split}", type=int, default=default, help=f"default {default}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=CANVAS, help="image side, a multiple of 28")
    args = parser.parse_args(argv)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    try:
        paths = write_scenes(args.out, counts, seed=args.seed, size=args.size)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        print(f"{split}: {counts[split]} samples in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
