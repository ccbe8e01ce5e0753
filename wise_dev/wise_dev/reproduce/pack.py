"""Packs a finished reproduction's WISE policy (prompted WISE-S) and its frozen tiny SAM2 into one
self-contained checkpoint folder, small enough to commit or copy to a robot (7 MB at the
default preset's sizes).

    python -m wise_dev.reproduce.pack --out my-wise [--run .build/reproduce/default --preset default]

The folder is an ordinary export (``wise_training.export``: safetensors, processor, manifest)
whose manifest names the SAM2 shipped inside it (``sam2/``), so the CLI, the node and
``make run MODEL=...`` load it like any checkpoint, with no ``--segmenter``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from . import help_text
from .base_policy import SIZES
from .demo import FAMILY_SETS, HIT_IOU, localisation
from .presets import PRESETS, Preset
from .run import RUN_RECORD, Reproduction

CONFIG = "wise"  # the GRPO run whose policy is packed (the paper's WISE, prompted as WISE-S)
CARD = "README.md"  # the Hugging Face model card's place in a model folder
CARD_SCENES = 48  # fresh demo scenes the card's localisation figures count, of each family set
SEGMENTER_DIR = "sam2"  # inside the packed folder; the manifest's segmenter


def pack(run: Path, out: Path, preset: str = "default", card_scenes: int = CARD_SCENES) -> Path:
    """Export ``run``'s WISE policy (made with ``preset``) to ``out`` with its SAM2 inside and a
    model card whose localisation figures count ``card_scenes`` fresh scenes; returns ``out``."""
    stages = json.loads((run / "stages.json").read_text(encoding="utf-8"))
    missing = [s for s in (f"grpo:{CONFIG}", "segmenter") if s not in stages]
    if missing:
        raise FileNotFoundError(f"{run} has not finished {', '.join(missing)}; run it first")
    reproduction = Reproduction(PRESETS[preset], run, threads=1)
    reproduction.export(
        reproduction.runs / CONFIG / "final", out, "wise_s", segmenter=SEGMENTER_DIR
    )
    shutil.copytree(reproduction.sam2, out / SEGMENTER_DIR)
    found = {f: localisation(out, card_scenes, families=f) for f in FAMILY_SETS}
    record = run / RUN_RECORD
    threads = json.loads(record.read_text())["threads"] if record.is_file() else 1
    card = model_card(PRESETS[preset], found, card_scenes, threads)
    (out / CARD).write_text(card, encoding="utf-8")
    return out


def model_card(
    preset: Preset, found: dict[str, dict[str, int]], scenes: int, threads: int = 1
) -> str:
    """What the packed folder is, what it knows (the scene world only), how well it finds
    objects in fresh scenes (``found``: family set -> ``demo.localisation``) and how to remake
    it (made with ``threads`` torch threads)."""
    thread_flag = f" --threads {threads}" if threads != 1 else ""
    size = SIZES[preset.policy_size]
    rows = "\n".join(
        f"| {families} | {f['hits']} | {f['largest_rule_hits']} |" for families, f in found.items()
    )
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags:
- wise
- grpo
- trl
- reasoning-segmentation
- synthetic-scenes
---
# WISE-S on the scene world (demo checkpoint)

A small Qwen2.5-VL policy (the reproduction's `{preset.policy_size}` size: text {size.hidden} wide,
{size.layers} layers) trained with `wise_training` (SFT, then GRPO with the `{CONFIG}` config:
the paper's WISE), prompted as WISE-S, and the tiny SAM2 it was trained with
(`{SEGMENTER_DIR}/`, frozen). It knows only the synthetic scene world of
`wise_training.scenes` (shapes of five colours on a striped grey floor, {preset.frame} x
{preset.frame} px): it shows the product's pipeline end to end on a fresh scene, not
segmentation of real photos.

Measured when packed, greedy, on {scenes} fresh scenes of each kind (`python -m
wise_dev.reproduce.demo --model DIR --localise {scenes} [--families all]`): targets whose
box it finds (IoU > {HIT_IOU}), beside the rule that always answers the largest object.
Referring instructions name the object by its looks ("the red triangle", "the only cross");
`all` adds the comparisons and relations ("the object closest to the blue square").

| instructions | found | largest-object rule |
|---|---|---|
{rows}

Made by:

    python -m wise_dev.reproduce --preset {preset.name}{thread_flag}
    python -m wise_dev.reproduce.pack --run .build/reproduce/{preset.name} --preset {preset.name} --out DIR

The same commands on the same kind of CPU remake it; another thread count or CPU rounds
floats differently, so its weights, and a few greedy answers, come out slightly different.

Try it on a fresh scene: `python -m wise_dev.reproduce.demo --model DIR --scene 3` (or
`make demo`, for the committed one).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.reproduce.pack", description=help_text(__doc__)
    )
    parser.add_argument("--run", type=Path, default=Path(".build/reproduce/default"))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--card-scenes",
        type=int,
        default=CARD_SCENES,
        metavar="N",
        help=f"fresh scenes the model card's localisation figures count (default {CARD_SCENES})",
    )
    args = parser.parse_args(argv)
    try:
        out = pack(args.run, args.out, args.preset, args.card_scenes)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
