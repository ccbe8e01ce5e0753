"""``wise-segment IMAGE "command"``: segment what a command asks for in one image, offline.

Writes ``<stem>_mask.png`` (0/255), ``<stem>_overlay.png`` (tinted mask, boxes, points,
rationale) and ``<stem>_result.json`` into ``--out`` and prints a one-line summary. Given a
video file or a folder of images instead, it reasons on one frame and tracks the object to the
end (:mod:`.cli_video`).

Exit codes (also in ``--help``): see :data:`EXIT_CODES`. Every input and setting is checked
before any model loads (a 7B load takes minutes).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .core.limits import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_COMMAND_CHARS,
    CheckedImage,
    image_size_problem,
)
from .core.manifest import DEFAULT_POLICY
from .core.prompts import DEFAULT_BREVITY, PromptMode, check_question
from .image_files import ImageFileError, read_rgb
from .result import Result
from .video_files import is_image_file

if TYPE_CHECKING:
    from .pipeline import WisePipeline

EXIT_OK, EXIT_NOT_OK, EXIT_BAD_INPUT, EXIT_LOAD_FAILED = 0, 1, 2, 3
EXIT_CODES = """exit codes:
  0  ok: the object was found and segmented (in a video: and tracked from there)
  1  the model answered with an error status (the completion is printed; files still written)
  2  bad input or setting (missing, truncated or oversized image, empty command, --out not a
     folder, a setting out of range), found before any model loads
  3  the models could not be loaded (missing checkpoint, unreachable hub or server, corrupt file)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wise-segment",
        description="Language-guided segmentation: a WISE policy (concise reasoning -> box + "
        "points) and SAM2 (mask). Writes IMAGE-STEM_mask.png (0/255), IMAGE-STEM_overlay.png and "
        "IMAGE-STEM_result.json into --out. Given a video file or a folder of images, reasons on "
        "one frame (--at) and tracks the object to the end with SAM2's video memory: writes "
        "STEM_result.json, STEM_answer.png, STEM_masks/ (one mask per frame), STEM_track.jsonl "
        "and STEM_overlay.mp4.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "image",
        type=Path,
        metavar="input",
        help="image file (png, jpg, ...; EXIF orientation is applied), video file (any "
        "format OpenCV reads: mp4, avi, mkv, ...) or folder of images (sorted by name)",
    )
    parser.add_argument("command", help='what to segment, e.g. "the cup left of the laptop"')
    parser.add_argument(
        "--model",
        default=DEFAULT_POLICY,
        help="policy: WISE checkpoint folder (with wise_manifest.json), HF folder "
        "or id, or a vLLM server URL (default: %(default)s)",
    )
    parser.add_argument(
        "--segmenter",
        default=None,
        help="SAM2 folder or id (default: the checkpoint's manifest, else "
        "facebook/sam2-hiera-large)",
    )
    parser.add_argument(
        "--mode",
        default=None,
        choices=[m.value for m in PromptMode],
        help="prompt mode (default: the manifest's, else wise_s)",
    )
    parser.add_argument(
        "--brevity",
        default=None,
        help=f"brevity instruction of wise_s (default: manifest, else {DEFAULT_BREVITY!r})",
    )
    parser.add_argument("--schema", default=None, choices=["single", "multi"], help="answer schema")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="generation budget")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "transformers", "vllm", "vllm-server"],
        help="policy backend (auto: URL -> vllm-server, else transformers)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)"
    )
    parser.add_argument(
        "--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on CUDA)"
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="larger images are refused (exit 2) unless --downscale; 0: no limit "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--downscale",
        action="store_true",
        help="shrink an image over --max-image-pixels to fit, instead of refusing it; the mask "
        "and boxes are mapped back to the original size",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="output folder, made if missing (default: .)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log loading and timing details"
    )
    from .cli_video import add_arguments

    add_arguments(parser)
    return parser


def _output_folder_problem(out: Path) -> str:
    """Why results cannot be written into ``out`` ("" when they can); the folder is made now,
    before loading, so a bad ``--out`` costs nothing."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder (it is made if missing)"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {out}: cannot make the folder ({exc.strerror or exc})"
    return ""


def _say(message: str) -> None:
    """One line per long stage, on stderr (stdout carries the one-line summary)."""
    print(f"wise-segment: {message}", file=sys.stderr, flush=True)


def _fit(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """``image`` shrunk (area filter, aspect kept) to at most ``max_pixels`` pixels."""
    import cv2

    height, width = image.shape[:2]
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _to_original(result: Result, width: int, height: int) -> None:
    """Map a result computed on a downscaled copy back to the original image size."""
    import cv2

    small_w, small_h = result.image_size
    sx, sy = width / small_w, height / small_h

    def scale(x: float, y: float) -> tuple[float, float]:
        return (min(round(x * sx), width - 1), min(round(y * sy), height - 1))

    def upsample(mask: np.ndarray) -> np.ndarray:
        return (
            cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        )

    for obj in result.objects:
        x1, y1 = scale(obj.box[0], obj.box[1])
        x2, y2 = scale(obj.box[2], obj.box[3])
        obj.box = (x1, y1, x2, y2)
        obj.points = tuple(scale(x, y) for x, y in obj.points)
        obj.mask = upsample(obj.mask) if obj.mask is not None else None
    result.mask = upsample(result.mask) if result.mask is not None else None
    result.image_size = (width, height)


def load_pipeline(args: argparse.Namespace, say: Callable[[str], None]) -> WisePipeline | int:
    """The models the options name, loaded; or, the reason printed, the exit code: 2 for a
    setting refused before anything loaded, 3 when loading failed."""
    from .pipeline import SettingsError, WisePipeline
    from .sources import CheckpointUnavailable

    say(f"loading the models (policy {args.model})")
    started = time.perf_counter()
    try:
        pipeline = WisePipeline.from_pretrained(
            args.model,
            args.segmenter,
            device=args.device,
            dtype=args.dtype,
            mode=args.mode,
            brevity=args.brevity,
            schema=args.schema,
            max_new_tokens=args.max_new_tokens,
            policy_backend=args.backend,
            max_image_pixels=args.max_image_pixels,
        )
    except SettingsError as exc:  # found before any model loaded
        print(f"wise-segment: invalid setting: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if isinstance(exc, CheckpointUnavailable):  # name the flag that sets it
            exc = exc.naming({"policy": "--model", "segmenter": "--segmenter"}[exc.role])
        print(
            f"wise-segment: could not load the models: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return EXIT_LOAD_FAILED
    say(f"loaded in {time.perf_counter() - started:.1f} s")
    logging.getLogger("wise-segment").info("loaded: %s", pipeline.describe())
    return pipeline


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Every input check comes before the models load (a 7B load takes minutes), and only here:
    # the pipeline is handed the checked command and image, and does not check them again.
    try:
        question = check_question(args.command, MAX_COMMAND_CHARS)
    except ValueError as exc:
        print(f"wise-segment: invalid command: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.image.is_dir() or (args.image.is_file() and not is_image_file(args.image)):
        from .cli_video import segment_video

        return segment_video(args, question, _say)
    try:
        image = read_rgb(args.image)
    except ImageFileError as exc:
        print(f"wise-segment: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = _output_folder_problem(args.out)
    if problem:
        print(f"wise-segment: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    height, width = image.shape[:2]
    problem = image_size_problem(width, height, args.max_image_pixels)
    if problem and not args.downscale:
        print(
            f"wise-segment: {args.image}: {problem}; pass --downscale to shrink it to fit, or "
            "raise --max-image-pixels",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    served: np.ndarray | CheckedImage = CheckedImage(image, args.max_image_pixels)
    if problem:  # the shrunk copy is a new image: the pipeline checks it
        served = _fit(image, args.max_image_pixels)
        logging.getLogger("wise-segment").warning(
            "downscaled %dx%d to %dx%d", width, height, served.shape[1], served.shape[0]
        )

    import cv2

    from .visualize import mask_to_uint8, overlay

    pipeline = load_pipeline(args, _say)
    if isinstance(pipeline, int):
        return pipeline
    try:
        result = pipeline.segment(served, question)
    finally:
        pipeline.close()
    if result.image_size != (width, height):
        if result.ok:
            _to_original(result, width, height)
        result.image_size = (width, height)
    if args.verbose or not result.ok:
        # What the model said, so a failure can be understood (bounded like the JSON's).
        completion = result.to_dict()["completion"]
        if completion:
            print(f"wise-segment: completion: {completion}", file=sys.stderr)

    stem = args.image.stem
    paths = {
        "mask": args.out / f"{stem}_mask.png",
        "overlay": args.out / f"{stem}_overlay.png",
        "result": args.out / f"{stem}_result.json",
    }
    cv2.imwrite(str(paths["mask"]), mask_to_uint8(result.mask, (height, width)))
    cv2.imwrite(str(paths["overlay"]), cv2.cvtColor(overlay(image, result), cv2.COLOR_RGB2BGR))
    paths["result"].write_text(result.to_json(image=str(args.image)) + "\n", encoding="utf-8")

    t = result.timings
    summary = (
        f"{result.status.value}: {len(result.objects)} object(s), "
        f"{int(result.mask.sum()) if result.mask is not None else 0} px, #Tok {result.reasoning_tokens}, "
        f"{t.total * 1000:.0f} ms | {result.rationale or result.error} -> {args.out}"
    )
    print(summary)
    return EXIT_OK if result.ok else EXIT_NOT_OK


if __name__ == "__main__":
    raise SystemExit(main())
