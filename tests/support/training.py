"""Training-side helpers shared by the training, export and reward tests (``support.training``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The TRL reward functions of a WISE run, each logged as rewards/<name>/mean (README): the
# summed terms of Eq. 3-4, then the zero-weight monitors.
WISE_REWARD_FUNCTIONS = (
    "tag_format_reward",
    "json_format_reward",
    "iou_reward",
    "box_l1_reward",
    "points_reward",
    "distill_reward",
    "think_tokens",
    "d_think_tokens",
    "distill_earned",
)


def run_module(
    module: str, *args: object, launcher: Sequence[str] = (), timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python [launcher] -m module args`` from the repository root, offline, as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".build" / "torch_extensions"))
    command = [sys.executable, *launcher, "-m", module, *(str(a) for a in args)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


def train_tiny_cpu(
    policy: Path,
    data: Path,
    out: Path,
    *extra: str,
    launcher: Sequence[str] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``python -m wise_training.train --config tiny_cpu`` on ``data``, writing to ``out``."""
    return run_module(
        "wise_training.train",
        "--config",
        "tiny_cpu",
        f"model.path={policy}",
        f"data.train={data}",
        f"trainer.output_dir={out}",
        *extra,
        launcher=launcher,
        timeout=timeout,
    )
