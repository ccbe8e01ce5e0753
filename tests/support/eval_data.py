"""Evaluation data for the evaluation / export / report tests (``support.eval_data``).

The taught-policy fixture that answers ``TAUGHT_COMPLETION`` is in ``tests/training/conftest.py``.
Ground truth here is computed with numpy slicing from the rectangles the tests write, NOT with
the reader's cv2 rasterisation, so the reader and the scores are checked independently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# A completion the taught tiny policy emits for every prompt (840x840 policy frame).
TAUGHT_COMPLETION = (
    "<think> the red square is the target </think>"
    '<answer>{"bbox": [210,210,630,630], "points_1": [350,350], "points_2": [490,490]}</answer>'
)


@dataclass(frozen=True)
class Truth:
    target: np.ndarray  # HxW bool
    ignore: np.ndarray  # HxW bool
    is_sentence: bool | None


def rect_polygon(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def rect_mask(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """What LISA's outline + fill of a rectangle covers: both corners inclusive."""
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def _image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = (0, 0, 255)  # red in BGR
    return image + rng.integers(0, 8, image.shape, dtype=np.uint8)


def write_reasonseg(folder: Path) -> dict[str, Truth]:
    """A ReasonSeg split in LISA's format: 4 samples on 3 images (an ignore region overlapping
    the target, two target polygons, an empty target, a 'flag' shape) + 2 corrupt files.

    Returns the expected ground truth per sample id (``<stem>#<text index>``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    truths: dict[str, Truth] = {}

    def write(
        stem: str, size: tuple[int, int], shapes: list[dict], texts: list[str], sentence: bool
    ) -> None:
        height, width = size
        cv2.imwrite(str(folder / f"{stem}.jpg"), _image(height, width, len(truths)))
        anno = {"text": texts, "is_sentence": sentence, "shapes": shapes}
        (folder / f"{stem}.json").write_text(json.dumps(anno))

    # a: target 33x23 box, a smaller ignore box overlapping it (drawn later, wins), a flag box.
    h, w = 48, 64
    write(
        "a",
        (h, w),
        [
            {"label": "flag", "points": rect_polygon(0, 0, 63, 47)},
            {"label": "ignore", "points": rect_polygon(30, 20, 50, 40)},
            {"label": "target", "points": rect_polygon(8, 8, 40, 30)},
        ],
        ["what would you use to hold soup?", "the bowl."],
        True,
    )
    ignore_a = rect_mask(h, w, 30, 20, 50, 40)
    target_a = rect_mask(h, w, 8, 8, 40, 30) & ~ignore_a
    truths["a#0"] = truths["a#1"] = Truth(target_a, ignore_a, True)

    # b: two separate target polygons, no ignore.
    h, w = 40, 50
    write(
        "b",
        (h, w),
        [
            {"label": "target", "points": rect_polygon(5, 5, 20, 30)},
            {"label": "target", "points": rect_polygon(30, 10, 35, 15)},
        ],
        ["the cup"],
        False,
    )
    truths["b#0"] = Truth(
        rect_mask(h, w, 5, 5, 20, 30) | rect_mask(h, w, 30, 10, 35, 15),
        np.zeros((h, w), dtype=bool),
        False,
    )

    # c: empty target (only an ignore region).
    h, w = 32, 32
    write(
        "c",
        (h, w),
        [{"label": "ignore", "points": rect_polygon(0, 0, 10, 10)}],
        ["the unicorn"],
        False,
    )
    truths["c#0"] = Truth(np.zeros((h, w), dtype=bool), rect_mask(h, w, 0, 0, 10, 10), False)

    # Corrupt: malformed JSON next to a valid image; a valid annotation without an image.
    cv2.imwrite(str(folder / "d.jpg"), _image(16, 16, 9))
    (folder / "d.json").write_text("{not json")
    (folder / "e.json").write_text(json.dumps({"text": ["x"], "is_sentence": False, "shapes": []}))
    return truths


def write_segzero_parquet(path: Path) -> dict[str, np.ndarray]:
    """RefCOCO in Seg-Zero's evaluation format (HF Image + 2-D bool mask) with one corrupt row
    (mask size != image size). Returns the target mask per expected sample id."""
    import datasets

    rows = {
        "image": [],
        "mask": [],
        "text": [],
        "image_id": [],
        "ann_id": [],
        "img_height": [],
        "img_width": [],
    }
    truths: dict[str, np.ndarray] = {}
    sizes = [(30, 40), (24, 36), (20, 20)]
    for row, (h, w) in enumerate(sizes):
        ok, png = cv2.imencode(".png", _image(h, w, 20 + row))
        assert ok
        mask = rect_mask(h, w, 2 + row, 3, 15, 12 + row)
        if row == 2:  # corrupt: mask of another size
            mask = np.zeros((h + 1, w), dtype=bool)
        else:
            truths[f"{row:06d}"] = mask
        rows["image"].append({"bytes": png.tobytes(), "path": None})
        rows["mask"].append(mask.tolist())
        rows["text"].append(f"the object number {row}")
        rows["image_id"].append(1000 + row)
        rows["ann_id"].append(5000 + row)
        rows["img_height"].append(h)
        rows["img_width"].append(w)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Sequence(datasets.Sequence(datasets.Value("bool"))),
            "text": datasets.Value("string"),
            "image_id": datasets.Value("int64"),
            "ann_id": datasets.Value("int64"),
            "img_height": datasets.Value("int64"),
            "img_width": datasets.Value("int64"),
        }
    )
    dataset = datasets.Dataset.from_dict(rows, features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return truths


def lisa_score(pred: np.ndarray, truth: Truth) -> tuple[int, int, float]:
    """Independent numpy re-implementation of LISA's per-sample scoring (ignore pixels dropped,
    empty union = IoU 1)."""
    keep = ~truth.ignore
    p, t = pred & keep, truth.target & keep
    inter, union = int((p & t).sum()), int((p | t).sum())
    return inter, union, (inter / union if union else 1.0)


def read_png_mask(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, path
    assert set(np.unique(pixels).tolist()) <= {0, 255}
    return pixels > 0


def check_png(path: Path) -> tuple[int, int]:
    """A well-formed PNG: signature, decodable, non-trivial size. Returns (height, width)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0  # not a blank canvas
    return pixels.shape[:2]
