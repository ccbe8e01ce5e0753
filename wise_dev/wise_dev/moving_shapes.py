"""Synthetic streams for tracking: flat shapes moving over a cluttered background, with exact masks.

Each stream has a target (the object an answer would name) and distractors, all with random
shapes and colours, moving with constant velocities and bouncing off the frame's edges, drawn
in a random depth order (a distractor can pass over the target), and a grey bar sliding across
in front of everything, so the target is partly occluded at times. The true mask of a frame is
the target's visible pixels. Colours are drawn per stream: which object is the target can only
be known from the seed frame's prompt, so following it takes memory, not a colour detector.

``prompt`` gives the seed frame's box and a point inside the target, as a policy's answer would.
Streams are a pure function of their seed (numpy's PCG64), the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")


@dataclass
class Stream:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    objects: np.ndarray  # (T, N, H, W) bool: each object's visible pixels, the target first
    shapes: list[str] = field(default_factory=list)  # target first

    @property
    def masks(self) -> np.ndarray:
        """(T, H, W) bool: the target's visible pixels."""
        return self.objects[:, 0]

    def prompt(
        self, index: int = 0, obj: int = 0
    ) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
        """An object's box (pixel-inclusive x1, y1, x2, y2) and one point inside it on frame
        ``index`` (the target by default): the visible pixel nearest the mask's centroid."""
        ys, xs = np.nonzero(self.objects[index, obj])
        box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
        cy, cx = ys.mean(), xs.mean()
        nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
        return box, (float(xs[nearest]), float(ys[nearest]))


def _shape_mask(
    kind: str, cx: float, cy: float, size: float, height: int, width: int
) -> np.ndarray:
    """A filled shape of radius ``size`` centred on (cx, cy), as a bool mask."""
    ys, xs = np.mgrid[0:height, 0:width]
    dx, dy = xs - cx, ys - cy
    if kind == "circle":
        return dx * dx + dy * dy <= size * size
    if kind == "square":
        return (np.abs(dx) <= size * 0.85) & (np.abs(dy) <= size * 0.85)
    if kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= size * 1.2
    # triangle pointing up: below the two slanted edges, above the base
    return (dy <= size * 0.8) & (dy >= -size + 2 * np.abs(dx) * 0.9)


def _colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A saturated colour at least a fixed distance from the colours in ``avoid``."""
    for _ in range(100):
        colour = rng.integers(0, 256, 3)
        colour[rng.integers(0, 3)] = rng.integers(200, 256)  # one bright channel
        if all(np.abs(colour - other).sum() > 150 for other in avoid):
            return colour
    return colour


def make_stream(
    seed: int,
    *,
    length: int = 16,
    height: int = 128,
    width: int = 128,
    distractors: int = 2,
    occluder: bool = True,
) -> Stream:
    """One stream of ``length`` frames (module doc). The target is fully visible on frame 0."""
    rng = np.random.default_rng(seed)
    scale = min(height, width)
    while True:
        n = 1 + distractors
        kinds = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), n)]
        sizes = rng.uniform(0.08, 0.15, n) * scale
        pos = np.stack(
            [
                np.array([rng.uniform(r, width - r) for r in sizes]),
                np.array([rng.uniform(r, height - r) for r in sizes]),
            ],
            axis=1,
        )
        speed = rng.uniform(0.015, 0.035, n) * scale  # pixels per frame
        angle = rng.uniform(0, 2 * np.pi, n)
        vel = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]
        background = rng.integers(0, 120, 3)
        colours: list[np.ndarray] = [background]
        for _ in range(n):
            colours.append(_colour(rng, colours))
        depth = rng.permutation(n)  # drawing order, back to front
        vertical = rng.random() < 0.5  # a vertical bar slides along x, a horizontal one along y
        extent = width if vertical else height
        bar_w = rng.uniform(0.08, 0.14) * extent
        bar_x = rng.uniform(-0.2, 1.2) * extent
        bar_v = rng.uniform(0.01, 0.03) * extent * rng.choice([-1, 1])
        clutter = [
            (
                rng.integers(0, width),
                rng.integers(0, height),
                rng.integers(4, 14),
                rng.integers(4, 14),
            )
            for _ in range(6)
        ]
        clutter_colour = np.clip(background + rng.integers(-40, 41, 3), 0, 255)
        noise = rng.integers(-12, 13, (height, width, 3))
        frames = np.empty((length, height, width, 3), np.uint8)
        objects = np.zeros((length, n, height, width), bool)
        p = pos.copy()
        for t in range(length):
            canvas = np.broadcast_to(background, (height, width, 3)).astype(np.int32).copy()
            for x, y, w, h in clutter:
                canvas[y : y + h, x : x + w] = clutter_colour
            visible = objects[t]
            for i in depth:
                shape = _shape_mask(kinds[i], p[i, 0], p[i, 1], sizes[i], height, width)
                canvas[shape] = colours[1 + i]
                visible &= ~shape  # what was drawn before is hidden under this shape
                visible[i] = shape
            if occluder:
                lo = int(np.clip(bar_x + bar_v * t, 0, extent))
                hi = int(np.clip(bar_x + bar_v * t + bar_w, 0, extent))
                band = (slice(None), slice(lo, hi)) if vertical else (slice(lo, hi), slice(None))
                canvas[band] = 150
                visible[(slice(None), *band)] = False
            frames[t] = np.clip(canvas + noise, 0, 255).astype(np.uint8)
            # Move, bouncing off the edges (the shape stays inside the frame).
            p += vel
            for axis, size in ((0, width), (1, height)):
                low, high = p[:, axis] < sizes, p[:, axis] > size - sizes
                vel[low | high, axis] *= -1
                p[:, axis] = np.clip(p[:, axis], sizes, size - sizes)
        full = _shape_mask(kinds[0], pos[0, 0], pos[0, 1], sizes[0], height, width).sum()
        if objects[0, 0].sum() >= 0.9 * full:  # the answer's frame shows the target whole
            return Stream(frames=frames, objects=objects, shapes=kinds)
