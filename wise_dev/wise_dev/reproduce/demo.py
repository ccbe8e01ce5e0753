"""A reproduction's WISE export on a scene it never saw, through the product CLI.

    python -m wise_dev.reproduce.demo --out .build/scene_demo [--scene 3] [--model DIR]

Draws a fresh scene of the scene world (seed ``DEMO_SEED``; the reproduction trains on seed 0),
runs ``wise-segment`` on it with the instruction the scene comes with, and prints how the
answer compares with the truth (box IoU, mask IoU).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEMO_SEED = 2026  # never a training seed: every demo scene is new to the policy
DEFAULT_MODEL = Path(".build/reproduce/default/exports/wise")  # make reproduce's WISE-S export


def demo_scene(index: int) -> tuple[np.ndarray, str, list[int], np.ndarray]:
    """(image, instruction, true box, true mask) of demo scene ``index``: the training families
    (held-out families are the evaluation's business)."""
    from wise_training.scenes import make_sample

    sample = make_sample(DEMO_SEED, "val", index)
    target = sample.scene.objects[sample.instruction.target]
    visible = sample.scene.visible[sample.instruction.target]
    return sample.scene.image, sample.instruction.text, target.box, visible


def main(argv: Sequence[str] | None = None) -> int:
    from PIL import Image

    from wise_perception.cli import main as cli_main
    from wise_perception.core.geometry import box_iou

    parser = argparse.ArgumentParser(prog="python -m wise_dev.reproduce.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(".build/scene_demo"))
    parser.add_argument("--scene", type=int, default=0, help="which demo scene (default 0)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    if not (args.model / "wise_manifest.json").is_file():
        print(
            f"error: no exported policy in {args.model}; make one with `make reproduce`",
            file=sys.stderr,
        )
        return 2
    image, instruction, box, truth = demo_scene(args.scene)
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
