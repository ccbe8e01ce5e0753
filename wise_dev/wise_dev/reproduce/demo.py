"""A reproduction's WISE export on scenes it never saw, through the product.

    python -m wise_dev.reproduce.demo --out .build/scene_demo [--scene 3] [--model DIR]
    python -m wise_dev.reproduce.demo --localise 48 [--model DIR] [--families all]

Draws a fresh scene of the scene world (seed ``DEMO_SEED``; the reproduction trains on seed 0),
runs ``wise-segment`` on it with the instruction the scene comes with, and prints how the
answer compares with the truth (box IoU, mask IoU). ``--localise N`` answers the first N fresh
scenes greedily through the pipeline and prints how many boxes find their target, beside the
rule that always answers the largest object. ``--model`` takes any export, a folder packed
by ``python -m wise_dev.reproduce.pack`` (its SAM2 inside) included; the default is the
committed demo checkpoint.

The scenes' instructions are *referring* ones by default: the object named by what it looks
like ("the red triangle", "the only yellow object", "the only cross"), so a hit shows the policy
seeing the object it was asked for. ``--families all`` draws every training family, the
comparisons and relations too ("the object closest to the blue square"), which the small
policy gets right far less often (README, "Reproduction at CPU scale").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import help_text

if TYPE_CHECKING:
    from wise_training.scenes import Sample

DEMO_SEED = 2026  # never a training seed: every demo scene is new to the policy
REFERRING_STREAM = 7  # the referring scenes' own random stream (the splits use 0, 1, 2)
# The committed demo checkpoint (the demo preset's WISE-S, packed with its SAM2; its README says
# how it was made).
DEMO_CHECKPOINT = Path("checkpoints/wise-s-scenes")  # from the repository's root, as make runs it
HIT_IOU = 0.5  # a box "finds" its target above this IoU (as the reproduction's checks count)
# Training families that name the object by its looks (wise_training.scenes.FAMILIES).
REFERRING = ("colour_shape", "colour_only", "shape_only")
FAMILY_SETS = ("referring", "all")


def demo_scene(
    index: int, families: str = "referring"
) -> tuple[np.ndarray, str, list[int], np.ndarray]:
    """(image, instruction, true box, true mask) of demo scene ``index`` of ``families`` (the
    training families; held-out families are the evaluation's business)."""
    sample = demo_sample(index, families)
    target = sample.scene.objects[sample.instruction.target]
    visible = sample.scene.visible[sample.instruction.target]
    return sample.scene.image, sample.instruction.text, target.box, visible


def localisation(
    model: Path, count: int, *, families: str = "referring", batch_size: int = 8
) -> dict[str, int]:
    """Greedy answers of the pipeline on demo scenes ``0..count-1`` of ``families``: how many
    boxes find their target (IoU > ``HIT_IOU``), and how many the always-largest rule's would."""
    from wise_perception.core.geometry import box_iou
    from wise_perception.pipeline import WisePipeline

    samples = [demo_sample(i, families) for i in range(count)]
    targets = [s.scene.objects[s.instruction.target] for s in samples]
    hits = parsed = 0
    with WisePipeline.from_pretrained(model, device="cpu", dtype="float32") as pipeline:
        for start in range(0, count, batch_size):
            chunk = slice(start, start + batch_size)
            results = pipeline.segment_batch(
                [s.scene.image for s in samples[chunk]],
                [s.instruction.text for s in samples[chunk]],
            )
            for target, result in zip(targets[chunk], results, strict=True):
                parsed += result.ok
                hits += (
                    bool(result.objects) and box_iou(result.objects[0].box, target.box) > HIT_IOU
                )
    largest = sum(
        box_iou(max(s.scene.objects, key=lambda o: o.area).box, t.box) > HIT_IOU
        for s, t in zip(samples, targets, strict=True)
    )
    return {"scenes": count, "hits": hits, "answered": parsed, "largest_rule_hits": largest}


def demo_sample(index: int, families: str = "referring") -> Sample:
    """The ``index``-th fresh scene with an instruction of ``families`` (``FAMILY_SETS``); the
    same on any machine."""
    from wise_training.scenes import FAMILIES, draw_sample, make_sample

    if families == "all":
        return make_sample(DEMO_SEED, "val", index)
    if families != "referring":
        raise ValueError(f"unknown family set {families!r}; known: {FAMILY_SETS}")
    rng = np.random.default_rng([DEMO_SEED, REFERRING_STREAM, index])
    return draw_sample(rng, {name: FAMILIES[name] for name in REFERRING})


def main(argv: Sequence[str] | None = None) -> int:
    from PIL import Image

    from wise_perception.cli import main as cli_main
    from wise_perception.core.geometry import box_iou

    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.reproduce.demo", description=help_text(__doc__)
    )
    parser.add_argument("--out", type=Path, default=Path(".build/scene_demo"))
    parser.add_argument("--scene", type=int, default=0, help="which demo scene (default 0)")
    parser.add_argument(
        "--model", type=Path, default=DEMO_CHECKPOINT, help="default: the committed demo checkpoint"
    )
    parser.add_argument(
        "--localise", type=int, metavar="N", help="count the first N fresh scenes localised"
    )
    parser.add_argument(
        "--families",
        choices=FAMILY_SETS,
        default="referring",
        help="the scenes' instructions: referring (default) or every training family",
    )
    args = parser.parse_args(argv)
    if not (args.model / "wise_manifest.json").is_file():
        print(
            f"error: no exported policy in {args.model}; make one with `make reproduce` "
            "(then python -m wise_dev.reproduce.pack)",
            file=sys.stderr,
        )
        return 2
    if args.localise:
        found = localisation(args.model, args.localise, families=args.families)
        print(
            f"{found['hits']} of {found['scenes']} fresh scenes ({args.families} instructions) "
            f"localised (box IoU > {HIT_IOU}); "
            f"{found['answered']} answered; always the largest object: "
            f"{found['largest_rule_hits']}"
        )
        return 0
    image, instruction, box, truth = demo_scene(args.scene, args.families)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scene_{args.scene}.png"
    Image.fromarray(image).save(path)
    print(f"scene: {path}  instruction: {instruction!r}  true box: {box}")
    code = cli_main([str(path), instruction, "--model", str(args.model), "--out", str(args.out)])
    result_path = args.out / f"{path.stem}_result.json"
    if code != 0 or not result_path.is_file():
        return code
    result = json.loads(result_path.read_text(encoding="utf-8"))
    if result.get("objects"):
        answer = result["objects"][0]["box"]
        mask = np.asarray(Image.open(args.out / f"{path.stem}_mask.png")) > 0
        mask_iou = (mask & truth).sum() / max((mask | truth).sum(), 1)
        print(
            f"answer box {answer}: box IoU {box_iou(answer, box):.2f} with the truth, "
            f"mask IoU {mask_iou:.2f}; rationale: {result.get('rationale', '')!r}"
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
