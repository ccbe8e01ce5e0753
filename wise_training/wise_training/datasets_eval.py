"""Readers of the evaluation sets behind the paper's Tables 1-3 and 7 (§4 "Datasets and Metrics").

Two on-disk formats are read, both from local paths only (no hub access):

- **ReasonSeg** in LISA's release format (``format="reasonseg"``): one folder per split with
  ``<id>.jpg`` and ``<id>.json`` side by side; the JSON holds ``{"text": [query, ...],
  "is_sentence": bool, "shapes": [{"label": "target"|"ignore"|"flag", "points": [[x, y], ...]}]}``.
  The ground truth is rasterised as LISA does it: "flag" shapes are skipped, the remaining
  polygons are drawn largest area first (outline, then fill, coordinates truncated to int32),
  "ignore" polygons with the ignore value and all others as target, so a smaller polygon drawn
  later overwrites a larger one. Every text of an image is one sample; ``is_sentence`` is kept
  so long (sentence) and short (phrase) queries can be reported apart.
- **The project's JSONL** (``format="jsonl"``, what ``wise_training.scenes`` writes and the
  trainer reads): one object per line with ``image`` and ``mask`` (paths relative to the file, or
  absolute; the mask a PNG whose non-zero pixels are the target) and ``instruction``; other keys
  (``box``, ``points``, ...) are ignored here. Sample ids are ``<file stem>-<line>``.
- **Seg-Zero's evaluation format** (``format="segzero"``) for RefCOCO / RefCOCO+ / RefCOCOg
  (and Seg-Zero's converted ReasonSeg): a Hugging Face dataset with the columns ``image``,
  ``mask`` (2-D bool list or array, or an image), ``text``, ``image_id``, ``ann_id``,
  ``img_height``, ``img_width``. A ``.parquet`` file, a folder of parquet files (a hub snapshot,
  e.g. ``data/test-00000-of-00001.parquet``) or a ``save_to_disk`` folder are accepted.

Readers are lazy generators (only the sample being evaluated is held in memory) and never raise
on a bad sample: a corrupt or oversized sample becomes a :class:`SkippedSample` with the reason,
which the evaluator counts and reports. A dataset that cannot be opened at all raises
:class:`DatasetError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .tables import MAX_IMAGE_PIXELS, DatasetError, is_table, parquet_files, read_rows

DatasetFormat = Literal["reasonseg", "segzero", "jsonl"]
FORMATS: tuple[str, ...] = ("reasonseg", "segzero", "jsonl")

# Bounds: evaluation data is trusted more than robot input, but a broken file must not take
# the run down (decompression bombs, runaway polygons, multi-GB JSON).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_POLYGON_POINTS = 100_000
MAX_SHAPES = 1_000
MAX_COORD = 1_000_000.0
MAX_JSONL_LINE = 1_000_000
MAX_QUERY_CHARS = 4_000  # the pipeline has its own (smaller) bound and reports invalid_command
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IGNORE_LABEL = 255  # LISA's value for "ignore" pixels


@dataclass
class EvalSample:
    """One (image, query, ground truth) triple. ``image`` is HxWx3 uint8 RGB."""

    dataset: str
    sample_id: str  # unique within the dataset, filesystem-safe
    query: str
    image: np.ndarray
    target: np.ndarray  # HxW bool
    ignore: np.ndarray | None = None  # HxW bool (LISA's ignore regions), None when there are none
    is_sentence: bool | None = None  # ReasonSeg long (True) / short (False) query; None elsewhere
    source: str = ""  # file (and row) the sample came from
    image_id: str | None = None
    ann_id: str | None = None

    @property
    def gt_area(self) -> int:
        return int(self.target.sum())


@dataclass(frozen=True)
class SkippedSample:
    """A sample (or a whole file of samples) that could not be read; ``reason`` says why."""

    dataset: str
    sample_id: str
    reason: str
    source: str = ""


ReaderItem = EvalSample | SkippedSample


# --------------------------------------------------------------------------- shared helpers


def safe_name(text: str) -> str:
    """``text`` as one file name: sample ids, and the model and dataset folders of saved masks."""
    keep = "".join(c if c.isalnum() or c in "-_.#" else "_" for c in str(text))
    return keep.strip(".")[:120] or "sample"


QUERY_PROBLEM = "query is empty, not text or too long"


def _usable_query(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip()) and len(text) <= MAX_QUERY_CHARS


def _decode_image_bytes(data: bytes, what: str) -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 RGB; ValueError when corrupt or too large."""
    import cv2

    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"{what}: {len(data)} bytes > {MAX_IMAGE_BYTES}")
    if not data:
        raise ValueError(f"{what}: empty image file")
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what}: not a decodable image")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{what}: {image.shape[1]}x{image.shape[0]} exceeds {MAX_IMAGE_PIXELS} pixels"
        )
    return np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB


def _read_image_file(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{path.name}: {size} bytes > {MAX_IMAGE_BYTES}")
    return _decode_image_bytes(path.read_bytes(), path.name)


def eval_data_format(path: str | Path) -> DatasetFormat:
    """Which evaluation-set reader ``path`` needs: ``segzero`` for parquet/arrow data (Seg-Zero's
    evaluation format), ``reasonseg`` for a folder of ``*.json`` annotations (LISA's), ``jsonl``
    for a ``.jsonl`` file (the project's own)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if path.is_file() and path.suffix == ".jsonl":
        return "jsonl"
    if path.is_file() and path.suffix != ".parquet":
        raise DatasetError(f"{path}: a dataset file must be .parquet or .jsonl (or give a folder)")
    if is_table(path):
        return "segzero"
    if next(iter(path.glob("*.json")), None) is not None:
        return "reasonseg"
    raise DatasetError(
        f"{path}: neither LISA's ReasonSeg layout (<id>.jpg + <id>.json) nor Seg-Zero's "
        "(parquet files or a save_to_disk folder)"
    )


def read_dataset(
    name: str, path: str | Path, fmt: DatasetFormat | None = None
) -> Iterator[ReaderItem]:
    """Samples of one dataset; the format is detected from the path unless given."""
    fmt = fmt or eval_data_format(path)
    if fmt == "reasonseg":
        return read_reasonseg(name, path)
    if fmt == "segzero":
        return read_segzero(name, path)
    if fmt == "jsonl":
        return read_jsonl(name, path)
    raise DatasetError(f"unknown dataset format {fmt!r}; known: {FORMATS}")


# --------------------------------------------------------------------------- ReasonSeg (LISA)


def _polygon(points: Any) -> np.ndarray:
    """LISA's polygon array: (1, N, 2) int32, coordinates truncated as ``np.array(..., int32)``."""
    if not isinstance(points, list) or not points:
        raise ValueError("a shape has no points")
    if len(points) > MAX_POLYGON_POINTS:
        raise ValueError(f"a shape has {len(points)} points > {MAX_POLYGON_POINTS}")
    for point in points:
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise ValueError(f"a point is not [x, y]: {point!r}")
        for value in point:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"a coordinate is not a number: {value!r}")
            if not math.isfinite(value) or abs(value) > MAX_COORD:
                raise ValueError(f"a coordinate is out of range: {value!r}")
    return np.array([points], dtype=np.float64).astype(np.int32)


def rasterize_reasonseg(shapes: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(target, ignore) bool masks from LISA-format shapes (see the module docstring)."""
    import cv2

    if not isinstance(shapes, list):
        raise ValueError("'shapes' must be a list")
    if len(shapes) > MAX_SHAPES:
        raise ValueError(f"{len(shapes)} shapes > {MAX_SHAPES}")
    drawable: list[tuple[int, int, np.ndarray]] = []  # (area, value, polygon)
    for shape in shapes:
        if not isinstance(shape, dict):
            raise ValueError("a shape is not a JSON object")
        label = str(shape.get("label", ""))
        if label.lower() == "flag":  # deprecated, meaningless annotations
            continue
        polygon = _polygon(shape.get("points"))
        scratch = np.zeros((height, width), dtype=np.uint8)
        cv2.polylines(scratch, polygon, True, 1, 1)
        cv2.fillPoly(scratch, polygon, 1)
        value = IGNORE_LABEL if "ignore" in label.lower() else 1
        drawable.append((int(scratch.sum()), value, polygon))
    labels = np.zeros((height, width), dtype=np.uint8)
    # Largest first; equal areas keep the later annotation first, as a reversed stable argsort.
    order = np.argsort([area for area, _, _ in drawable], kind="stable")[::-1]
    for index in order:
        _, value, polygon = drawable[int(index)]
        cv2.polylines(labels, polygon, True, value, 1)
        cv2.fillPoly(labels, polygon, value)
    return labels == 1, labels == IGNORE_LABEL


def _find_image(json_path: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = json_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def read_reasonseg(name: str, folder: str | Path) -> Iterator[ReaderItem]:
    """LISA-format ReasonSeg split folder -> one sample per (image, text), files in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of ReasonSeg <id>.jpg/<id>.json files")
    json_files = sorted(folder.glob("*.json"))
    if not json_files:
        raise DatasetError(f"{folder} holds no ReasonSeg annotation (*.json) files")
    return _iter_reasonseg(name, json_files)


def _iter_reasonseg(name: str, json_files: list[Path]) -> Iterator[ReaderItem]:
    for json_path in json_files:
        stem = safe_name(json_path.stem)
        try:
            if json_path.stat().st_size > MAX_JSON_BYTES:
                raise ValueError(f"annotation larger than {MAX_JSON_BYTES} bytes")
            anno = json.loads(json_path.read_text(encoding="utf-8"))
            if not isinstance(anno, dict):
                raise ValueError("annotation is not a JSON object")
            texts = anno.get("text")
            if isinstance(texts, str):
                texts = [texts]
            if not isinstance(texts, list) or not texts:
                raise ValueError("annotation has no 'text' list")
            is_sentence = anno.get("is_sentence")
            if is_sentence is not None and not isinstance(is_sentence, bool):
                raise ValueError(f"'is_sentence' is not a boolean: {is_sentence!r}")
            image_path = _find_image(json_path)
            if image_path is None:
                raise ValueError("no image next to the annotation")
            image = _read_image_file(image_path)
            target, ignore = rasterize_reasonseg(anno.get("shapes"), *image.shape[:2])
        except (OSError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            yield SkippedSample(name, stem, str(exc), str(json_path))
            continue
        for k, text in enumerate(texts):
            sample_id = f"{stem}#{k}"
            if not _usable_query(text):
                yield SkippedSample(name, sample_id, QUERY_PROBLEM, str(json_path))
                continue
            yield EvalSample(
                dataset=name,
                sample_id=sample_id,
                query=text,
                image=image,
                target=target,
                ignore=ignore if ignore.any() else None,
                is_sentence=is_sentence,
                source=str(json_path),
                image_id=json_path.stem,
            )


# --------------------------------------------------------------------------- Seg-Zero (HF / parquet)

_SEGZERO_COLUMNS = ("image", "mask", "text", "image_id", "ann_id", "img_height", "img_width")
_REQUIRED_COLUMNS = ("image", "mask", "text")


def _segzero_image(value: Any, what: str) -> np.ndarray:
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            path = Path(value["path"])
            if not path.is_file():
                raise ValueError(f"{what}: image path {path} does not exist")
            return _read_image_file(path)
        if not isinstance(data, bytes | bytearray):
            raise ValueError(f"{what}: image has no bytes")
        return _decode_image_bytes(bytes(data), what)
    if isinstance(value, bytes | bytearray):
        return _decode_image_bytes(bytes(value), what)
    if hasattr(value, "convert"):  # a decoded PIL image
        return np.asarray(value.convert("RGB"))
    raise ValueError(f"{what}: unsupported image value {type(value).__name__}")


def _segzero_mask(value: Any, what: str) -> np.ndarray:
    if isinstance(value, dict | bytes | bytearray) or hasattr(value, "convert"):
        image = _segzero_image(value, what)
        return image.max(axis=2) > 0
    if value is None:
        raise ValueError(f"{what}: mask is missing")
    mask = np.asarray(value)
    if mask.dtype == object:
        raise ValueError(f"{what}: mask rows have different lengths")
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"{what}: mask is not a 2-D array (shape {mask.shape})")
    if mask.size > MAX_IMAGE_PIXELS:
        raise ValueError(f"{what}: mask is too large")
    return mask.astype(bool)


def read_segzero(name: str, path: str | Path) -> Iterator[ReaderItem]:
    """Seg-Zero-format samples, in file and row order; ids are ``<row>`` (``<file>-<row>`` for
    several files)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    return _iter_segzero(name, path)


def _iter_segzero(name: str, path: Path) -> Iterator[ReaderItem]:
    several = len(parquet_files(path)) > 1
    for item in read_rows(path, columns=_SEGZERO_COLUMNS, required=_REQUIRED_COLUMNS):
        source, row, record = item.source, item.index, item.values
        prefix = f"{safe_name(Path(source).stem)}-" if several else ""
        sample_id = f"{prefix}{row:06d}"
        what = f"row {row}"
        try:
            text = record.get("text")
            if not _usable_query(text):
                raise ValueError(f"{what}: {QUERY_PROBLEM}")
            image = _segzero_image(record.get("image"), what)
            target = _segzero_mask(record.get("mask"), what)
            if target.shape != image.shape[:2]:
                raise ValueError(
                    f"{what}: mask {target.shape} and image {image.shape[:2]} differ in size"
                )
            height, width = record.get("img_height"), record.get("img_width")
            if (
                height is not None
                and width is not None
                and (int(height), int(width)) != target.shape
            ):
                raise ValueError(
                    f"{what}: img_height/img_width {height}x{width} do not match the mask {target.shape}"
                )
        except (OSError, ValueError, TypeError) as exc:
            yield SkippedSample(name, sample_id, str(exc), f"{source}:{row}")
            continue
        image_id, ann_id = record.get("image_id"), record.get("ann_id")
        yield EvalSample(
            dataset=name,
            sample_id=sample_id,
            query=text,
            image=image,
            target=target,
            source=f"{source}:{row}",
            image_id=None if image_id is None else str(image_id),
            ann_id=None if ann_id is None else str(ann_id),
        )


# --------------------------------------------------------------------------- the project's JSONL


def read_jsonl(name: str, path: str | Path) -> Iterator[ReaderItem]:
    """The project's JSONL (see the module docstring), in line order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} is not a JSONL file")
    return _iter_jsonl(name, path)


def _jsonl_file(root: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"no '{key}' path")
    candidate = Path(value)
    return candidate if candidate.is_absolute() else root / candidate


def _iter_jsonl(name: str, path: Path) -> Iterator[ReaderItem]:
    stem = safe_name(path.stem)
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            sample_id, source = f"{stem}-{line_no:06d}", f"{path}:{line_no}"
            try:
                if len(line) > MAX_JSONL_LINE:
                    raise ValueError(f"line longer than {MAX_JSONL_LINE} characters")
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise ValueError("line is not a JSON object")
                query = row.get("instruction")
                if not _usable_query(query):
                    raise ValueError(QUERY_PROBLEM)
                image = _read_image_file(_jsonl_file(path.parent, row.get("image"), "image"))
                target = _read_image_file(_jsonl_file(path.parent, row.get("mask"), "mask"))
                target = target.max(axis=2) > 0
                if target.shape != image.shape[:2]:
                    raise ValueError(
                        f"mask {target.shape} and image {image.shape[:2]} differ in size"
                    )
            except (OSError, ValueError) as exc:
                yield SkippedSample(name, sample_id, str(exc), source)
                continue
            yield EvalSample(
                dataset=name,
                sample_id=sample_id,
                query=query,
                image=image,
                target=target,
                source=source,
                image_id=str(row.get("image")),
            )
