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
from .presets import PRESETS
from .run import Reproduction

CONFIG = "wise"  # the GRPO run whose policy is packed (the paper's WISE, prompted as WISE-S)
SEGMENTER_DIR = "sam2"  # inside the packed folder; the manifest's segmenter


def pack(run: Path, out: Path, preset: str = "default") -> Path:
    """Export ``run``'s WISE policy (made with ``preset``) to ``out`` with its SAM2 inside;
    returns ``out``."""
    stages = json.loads((run / "stages.json").read_text(encoding="utf-8"))
    missing = [s for s in (f"grpo:{CONFIG}", "segmenter") if s not in stages]
    if missing:
        raise FileNotFoundError(f"{run} has not finished {', '.join(missing)}; run it first")
    reproduction = Reproduction(PRESETS[preset], run, threads=1)
    reproduction.export(
        reproduction.runs / CONFIG / "final", out, "wise_s", segmenter=SEGMENTER_DIR
    )
    shutil.copytree(reproduction.sam2, out / SEGMENTER_DIR)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.reproduce.pack", description=help_text(__doc__)
    )
    parser.add_argument("--run", type=Path, default=Path(".build/reproduce/default"))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        out = pack(args.run, args.out, args.preset)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
