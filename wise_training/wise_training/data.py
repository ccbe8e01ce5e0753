"""Training data: Seg-Zero's RefCOCOg 2k release and a generic JSONL, as GRPO prompts.

Every sample becomes ``{"prompt": <conversation from the prompt contract>, "image": <PIL image
in the 840x840 policy frame>, "gt_box": [x1, y1, x2, y2], "gt_points": [[x, y], [x, y]]}``
with the ground truth in the policy frame, which is what the reward functions
(``wise_training.rewards``) read. Samples that cannot be used are reported with the reason and
skipped; a run never crashes on one.

JSONL format, one object per line (``image`` relative to the JSONL file, or absolute; ``box``
and ``points`` in the image's own pixels, x right, y down; ``points`` optional, else taken from
``mask`` or, failing that, from the box)::

    {"image": "images/00000.png", "instruction": "the red square", "box": [38, 57, 152, 143], "points": [[76, 86], [114, 114]]}

``python -m wise_training.data synth --out data/synth --n 16`` writes such a dataset (PNG images
of several sizes, each with one red square, and ``train.jsonl``);
``python -m wise_training.data check data/synth/train.jsonl`` reads a dataset as training does
and prints what it would use and skip.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from wise_perception.core.geometry import ResizeProtocol
from wise_perception.core.prompts import PromptSpec, build_messages, spec_for

from .tables import MAX_IMAGE_PIXELS, DatasetError, read_rows

LOG = logging.getLogger(__name__)

MAX_SAMPLES = 1_000_000
MAX_JSONL_LINE = 1_000_000
MAX_SKIPS_LOGGED = 10  # the log names the first few; ``data check`` lists every one

# Seg-Zero's ground-truth string (verl/utils/reward_score/seg*.py patterns).
_BOX_RE = re.compile(
    r"<box>\((\d+(?:\.\d+)?),(\d+(?:\.\d+)?)\),\((\d+(?:\.\d+)?),(\d+(?:\.\d+)?)\)</box>"
)
_POINTS_RE = re.compile(
    r"<points>\((\d+(?:\.\d+)?),(\d+(?:\.\d+)?)\),\((\d+(?:\.\d+)?),(\d+(?:\.\d+)?)\)</points>"
)


class SampleError(ValueError):
    """One sample is unusable; the message says why."""


@dataclass
class DataReport:
    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, sample_id: str, reason: str) -> None:
        self.skipped.append((sample_id, reason))
        LOG.debug("skipping sample %s: %s", sample_id, reason)

    def summary(self) -> str:
        return f"{self.loaded} samples loaded, {len(self.skipped)} skipped"


def parse_solution(solution: str) -> tuple[list[float], list[list[float]]]:
    """``<box>(x1,y1),(x2,y2)</box><points>(x,y),(x,y)</points>`` -> box, points."""
    box_match = _BOX_RE.search(solution or "")
    if box_match is None:
        raise SampleError(f"no <box>(x1,y1),(x2,y2)</box> in solution {solution[:80]!r}")
    box = [float(v) for v in box_match.groups()]
    points_match = _POINTS_RE.search(solution)
    if points_match is None:
        raise SampleError(f"no <points>(x,y),(x,y)</points> in solution {solution[:80]!r}")
    p = [float(v) for v in points_match.groups()]
    return _check_box(box), [[p[0], p[1]], [p[2], p[3]]]


def _check_box(box: Any) -> list[float]:
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise SampleError(f"box must be [x1, y1, x2, y2], got {box!r}")
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError) as exc:
        raise SampleError(f"box has non-numbers: {box!r}") from exc
    if not all(np.isfinite(values)) or values[2] <= values[0] or values[3] <= values[1]:
        raise SampleError(f"box is empty or not finite: {box!r}")
    return values


def _check_inside(values: Sequence[float], width: int, height: int, what: str) -> None:
    """Coordinates (x, y, x, y...) must lie in the image (a pixel of slack for inclusive or
    exclusive corners)."""
    xs, ys = values[0::2], values[1::2]
    if min(xs) < -1 or min(ys) < -1 or max(xs) > width + 1 or max(ys) > height + 1:
        raise SampleError(
            f"{what} {[round(v, 1) for v in values]} lies outside the {width}x{height} image "
            "(coordinates are image pixels, x right, y down)"
        )


def points_from_mask(mask: np.ndarray) -> list[list[float]]:
    """Two points inside the object: centres of its two largest inscribed circles, as Seg-Zero's
    prompt describes them (maxima of the distance transform, the second outside the first circle)."""
    import cv2

    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if binary.sum() == 0:
        raise SampleError("mask is empty")
    dist = cv2.distanceTransform(binary, cv2.DIST_L2, 5)
    y1, x1 = np.unravel_index(int(np.argmax(dist)), dist.shape)
    radius = float(dist[y1, x1])
    yy, xx = np.mgrid[: dist.shape[0], : dist.shape[1]]
    masked = np.where((yy - y1) ** 2 + (xx - x1) ** 2 <= radius**2, 0, dist)
    if masked.max() <= 0:
        return [[float(x1), float(y1)], [float(x1), float(y1)]]
    y2, x2 = np.unravel_index(int(np.argmax(masked)), dist.shape)
    return [[float(x1), float(y1)], [float(x2), float(y2)]]


def points_from_box(box: list[float]) -> list[list[float]]:
    """Fallback without a mask: the box centre's horizontal (or vertical) quarter points."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if x2 - x1 >= y2 - y1:
        return [[x1 + (x2 - x1) / 4, cy], [x2 - (x2 - x1) / 4, cy]]
    return [[cx, y1 + (y2 - y1) / 4], [cx, y2 - (y2 - y1) / 4]]


def _open_image(source: Any) -> Image.Image:
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, bytes) or (isinstance(source, dict) and source.get("bytes")):
            import io

            data = source if isinstance(source, bytes) else source["bytes"]
            image = Image.open(io.BytesIO(data))
        else:
            path = source.get("path") if isinstance(source, dict) else source
            image = Image.open(Path(path))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise SampleError(
                f"image of {image.width}x{image.height} exceeds {MAX_IMAGE_PIXELS} pixels"
            )
        image.load()
        # Camera JPEGs store their rotation in EXIF; the image as seen is the rotated one (the
        # release's `datasets` loading applies it too), and boxes are given in that frame.
        return ImageOps.exif_transpose(image).convert("RGB")
    except SampleError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt files
        raise SampleError(f"unreadable image ({type(exc).__name__}: {exc})") from exc


def _segzero_release_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Seg-Zero's training release: ``image``, ``problem``, ``solution`` (and maybe ``id``)."""
    for number, row in enumerate(read_rows(path, split="train")):
        yield str(row.values.get("id", number)), row.values


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            sample_id = f"{path.name}:{line_no}"
            if len(line) > MAX_JSONL_LINE:
                yield sample_id, {"__error__": f"line longer than {MAX_JSONL_LINE} characters"}
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                # The parser's own position says "line 1" (it sees one line): give the column.
                yield sample_id, {"__error__": f"invalid JSON ({exc.msg} at column {exc.colno})"}
                continue
            if not isinstance(row, dict):
                yield sample_id, {"__error__": "line is not a JSON object"}
                continue
            yield sample_id, {**row, "__root__": path.parent}


def _convert_segzero(
    row: dict[str, Any], proto: ResizeProtocol
) -> tuple[Image.Image, str, list, list]:
    image = _open_image(row.get("image"))
    problem = row.get("problem") or row.get("text")
    if not isinstance(problem, str) or not problem.strip():
        raise SampleError("no 'problem' text")
    box, points = parse_solution(str(row.get("solution", "")))
    if image.size != (proto.size, proto.size):
        # The published set is already at 840; other sizes: the solution is in original pixels.
        box = list(proto.box_to_policy(box, *image.size))
        points = [list(proto.point_to_policy(p, *image.size)) for p in points]
    return image, problem, box, points


def _convert_jsonl(
    row: dict[str, Any], proto: ResizeProtocol
) -> tuple[Image.Image, str, list, list]:
    if "__error__" in row:
        raise SampleError(row["__error__"])
    root: Path = row["__root__"]
    image_path = row.get("image")
    if not isinstance(image_path, str):
        raise SampleError("no 'image' path")
    image = _open_image(root / image_path)
    instruction = row.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise SampleError("no 'instruction' text")
    box = _check_box(row.get("box"))
    width, height = image.size
    _check_inside(box, width, height, "box")
    if row.get("points") is not None:
        points = row["points"]
        if not (
            isinstance(points, list)
            and len(points) == 2
            and all(isinstance(p, list | tuple) and len(p) == 2 for p in points)
        ):
            raise SampleError(f"points must be [[x, y], [x, y]], got {points!r}")
        try:
            points = [[float(p[0]), float(p[1])] for p in points]
        except (TypeError, ValueError) as exc:
            raise SampleError(f"points have non-numbers: {points!r}") from exc
        _check_inside([*points[0], *points[1]], width, height, "points")
    elif row.get("mask"):
        mask = _open_image(root / row["mask"]).convert("L")
        points = points_from_mask(np.asarray(mask))
    else:
        points = points_from_box(box)
    return (
        image,
        instruction,
        list(proto.box_to_policy(box, width, height)),
        [list(proto.point_to_policy(p, width, height)) for p in points],
    )


def training_data_format(path: Path) -> str:
    """Which training-data reader ``path`` needs: ``jsonl`` for a JSON-lines file, else
    ``segzero`` (Seg-Zero's training release as parquet or a saved dataset)."""
    return "jsonl" if path.suffix in (".jsonl", ".json") else "segzero"


def load_training_samples(
    path: str | Path,
    spec: PromptSpec,
    *,
    fmt: str = "auto",
    policy_frame: int = 840,
    limit: int | None = None,
    system_prompt: str | None = None,
    log_skips: bool = True,
) -> tuple[list[dict[str, Any]], DataReport]:
    """Read, validate and convert samples; images resized to the policy frame (shared protocol).
    ``log_skips``: name the first skipped samples in the log (``data check`` prints them all)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data {path} does not exist")
    fmt = training_data_format(path) if fmt == "auto" else fmt
    if fmt not in ("segzero", "jsonl"):
        raise ValueError(f"unknown data format {fmt!r}; use segzero or jsonl")
    proto = ResizeProtocol(policy_frame)
    rows = _jsonl_rows(path) if fmt == "jsonl" else _segzero_release_rows(path)
    convert = _convert_jsonl if fmt == "jsonl" else _convert_segzero
    report, samples = DataReport(), []
    cap = min(limit or MAX_SAMPLES, MAX_SAMPLES)
    for sample_id, row in rows:
        if len(samples) >= cap:
            break
        try:
            image, question, box, points = convert(row, proto)
            prompt = build_messages(question, spec, system=system_prompt)
        except (SampleError, ValueError, OSError) as exc:
            report.skip(sample_id, str(exc))
            continue
        resized = Image.fromarray(proto.resize(np.asarray(image)))
        samples.append({"prompt": prompt, "image": resized, "gt_box": box, "gt_points": points})
        report.loaded += 1
    LOG.info("training data %s: %s", path, report.summary())
    if not log_skips:
        return samples, report
    for sample_id, reason in report.skipped[:MAX_SKIPS_LOGGED]:
        LOG.warning("skipped sample %s: %s", sample_id, reason)
    if len(report.skipped) > MAX_SKIPS_LOGGED:
        LOG.warning(
            "... and %d more skipped (python -m wise_training.data check %s lists them all)",
            len(report.skipped) - MAX_SKIPS_LOGGED,
            path,
        )
    return samples, report


# --------------------------------------------------------------------------- synthetic data

# Where the synthetic object sits in the 840x840 policy frame, and its two points: what the smoke
# run's tiny policy is taught to answer (wise_dev.train_smoke), so it earns rewards on this data.
SYNTH_BOX_840: tuple[int, int, int, int] = (100, 200, 400, 500)
SYNTH_POINTS_840: tuple[tuple[int, int], tuple[int, int]] = ((200, 300), (300, 400))
SYNTH_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (480, 640), (400, 400))
SYNTH_INSTRUCTIONS: tuple[str, ...] = (
    "the red square",
    "the red box on the gray background",
    "the only red object",
    "What should the robot pick up if it wants the red thing?",
)
MAX_SYNTH_SAMPLES = 100_000


def _to_source(value: float, size: int, frame: int) -> int:
    return round(value * size / frame)


def _clear_synth_folder(out: Path) -> None:
    """A folder written by an earlier ``synth`` is emptied first (a smaller set must not leave
    stale images behind); a folder holding anything else is refused."""
    if not out.exists():
        return
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    if not entries <= {"images", "train.jsonl"}:
        raise FileExistsError(
            f"{out} holds other files than a synthetic set ({sorted(entries)[:5]}); choose a new folder"
        )
    shutil.rmtree(out / "images", ignore_errors=True)
    (out / "train.jsonl").unlink(missing_ok=True)


def synth_dataset(
    out: str | Path,
    n: int = 16,
    *,
    seed: int = 0,
    box_840: Sequence[float] = SYNTH_BOX_840,
    points_840: Sequence[Sequence[float]] = SYNTH_POINTS_840,
    policy_frame: int = 840,
) -> Path:
    """Write ``n`` images (sizes cycling through ``SYNTH_SIZES``; a red rectangle on gray noise)
    and ``out/train.jsonl``; boxes and points in source pixels, image paths relative to the
    JSONL. The object is placed so that, in the policy frame, it is ``box_840``. Returns the
    JSONL path."""
    if not 1 <= n <= MAX_SYNTH_SAMPLES:
        raise ValueError(f"n must be between 1 and {MAX_SYNTH_SAMPLES}, got {n}")
    out = Path(out)
    _clear_synth_folder(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        width, height = SYNTH_SIZES[i % len(SYNTH_SIZES)]
        x1, x2 = (_to_source(v, width, policy_frame) for v in (box_840[0], box_840[2]))
        y1, y2 = (_to_source(v, height, policy_frame) for v in (box_840[1], box_840[3]))
        image = rng.integers(100, 156, (height, width, 3), dtype=np.uint8)
        image[y1:y2, x1:x2] = (220, 20, 20)
        name = f"images/{i:05d}.png"
        Image.fromarray(image).save(out / name)
        points = [
            [_to_source(x, width, policy_frame), _to_source(y, height, policy_frame)]
            for x, y in points_840
        ]
        row = {
            "image": name,
            "instruction": SYNTH_INSTRUCTIONS[i % len(SYNTH_INSTRUCTIONS)],
            "box": [x1, y1, x2, y2],
            "points": points,
        }
        lines.append(json.dumps(row))
    path = out / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_training.data",
        description="Training data tools: write a synthetic JSONL dataset, or check a dataset.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write a small synthetic JSONL dataset with images")
    synth.add_argument("--out", type=Path, required=True, help="folder for images/ and train.jsonl")
    synth.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    synth.add_argument("--seed", type=int, default=0)
    check = sub.add_parser("check", help="read a dataset as training does; report usable/skipped")
    check.add_argument("path", type=Path, help="JSONL file, parquet file or saved dataset folder")
    check.add_argument("--format", default="auto", choices=("auto", "jsonl", "segzero"))
    check.add_argument("--limit", type=int, default=None)
    check.add_argument(
        "--policy-frame",
        type=int,
        default=840,
        help="the policy frame of the config (data.policy_frame)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "synth":
            path = synth_dataset(args.out, args.n, seed=args.seed)
            print(f"wrote {args.n} samples: {path}")
            print(path.read_text(encoding="utf-8").splitlines()[0])
            return 0
        samples, report = load_training_samples(
            args.path,
            spec_for("wise_train"),
            fmt=args.format,
            limit=args.limit,
            policy_frame=args.policy_frame,
            log_skips=False,
        )
    except (OSError, ValueError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sample_id, reason in report.skipped:
        print(f"skipped {sample_id}: {reason}")
    if samples:
        first = samples[0]
        print(f"first sample (policy frame): box {first['gt_box']}, points {first['gt_points']}")
    print(report.summary())
    if report.skipped:
        total = report.loaded + len(report.skipped)
        print(f"error: {len(report.skipped)} of {total} samples cannot be used", file=sys.stderr)
    # 0: every sample usable; 1: some (or all) cannot be used; 2: the data cannot be read.
    return 0 if samples and not report.skipped else 1


if __name__ == "__main__":
    raise SystemExit(main())
