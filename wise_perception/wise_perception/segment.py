"""``wise-segment IMAGE "command"``: segment what a command asks for in one image, offline.

Writes ``<stem>_mask.png`` (0/255), ``<stem>_overlay.png`` (tinted mask, boxes, points,
rationale) and ``<stem>_result.json`` into ``--out`` and prints a one-line summary.

Exit codes: 0 ok; 1 the pipeline answered with a non-ok status (files still written);
2 bad input (missing/unreadable image, invalid command); 3 the models could not be loaded.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .core.manifest import DEFAULT_POLICY
from .core.prompts import DEFAULT_BREVITY, PromptMode, normalize_question

EXIT_OK, EXIT_NOT_OK, EXIT_BAD_INPUT, EXIT_LOAD_FAILED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wise-segment",
        description="Language-guided segmentation: a WISE policy (concise reasoning -> box + "
        "points) and SAM2 (mask). Writes the mask, an overlay and the result JSON.",
    )
    parser.add_argument("image", type=Path, help="RGB image file (png, jpg, ...)")
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
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log loading and timing details"
    )
    return parser


def _read_rgb(path: Path) -> object:
    import cv2

    if not path.is_file():
        return None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        normalize_question(args.command)
    except ValueError as exc:
        print(f"wise-segment: invalid command: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    image = _read_rgb(args.image)
    if image is None:
        what = "does not exist" if not args.image.exists() else "is not a readable image"
        print(f"wise-segment: {args.image} {what}", file=sys.stderr)
        return EXIT_BAD_INPUT

    import cv2

    from .pipeline import WisePipeline
    from .visualize import mask_png, overlay

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
        )
    except Exception as exc:
        print(
            f"wise-segment: could not load the models: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return EXIT_LOAD_FAILED
    try:
        result = pipeline.segment(image, args.command)
    finally:
        pipeline.close()

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.image.stem
    paths = {
        "mask": args.out / f"{stem}_mask.png",
        "overlay": args.out / f"{stem}_overlay.png",
        "result": args.out / f"{stem}_result.json",
    }
    cv2.imwrite(str(paths["mask"]), mask_png(result))
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
