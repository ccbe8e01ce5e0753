"""Training callbacks: a machine-readable copy of every log line (TensorBoard gets the same)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class JsonlLogCallback(TrainerCallback):
    """Appends each logged step (reward terms, #Tok monitors, KL, loss) to ``metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "step": state.global_step,
            **{k: v for k, v in logs.items() if isinstance(v, int | float)},
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
