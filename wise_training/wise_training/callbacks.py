"""Training callbacks: a machine-readable copy of every log line (TensorBoard gets the same), and
a console that a person can read (one progress bar, one short line per logging step)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

# Accuracy terms of Eq. 3 (R_acc) and format terms (R_format), as TRL logs their means.
_ACCURACY = ("iou_reward", "box_l1_reward", "points_reward")
_FORMAT = ("tag_format_reward", "json_format_reward")


class JsonlLogCallback(TrainerCallback):
    """Writes each logged step (reward terms, #Tok monitors, KL, loss) to ``metrics.jsonl``.

    A new run starts the file afresh; a run resumed from a checkpoint keeps the lines up to the
    checkpoint's step and drops the rest (they are logged again), so the file always holds one
    run's steps, in order."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        kept = []
        if state.global_step > 0 and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= state.global_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        record = {
            "step": state.global_step,
            **{k: v for k, v in logs.items() if isinstance(v, int | float)},
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _mean(logs: dict[str, Any], name: str) -> float | None:
    value = logs.get(f"rewards/{name}/mean")
    return float(value) if isinstance(value, int | float) else None


def log_line(step: int, max_steps: int, logs: dict[str, Any], seconds_per_step: float) -> str:
    """One readable line for a GRPO logging step: what the run optimises, then what it costs.

    ``step 12/150  reward 3.41  acc 1.52  fmt 2.00  distill 0.31 (earned 62%)  think 41.2
    d_think 88.0  kl 0.0021  2.3 s/step``; terms the run does not have are left out."""
    parts = [f"step {step}/{max_steps}"]
    if isinstance(logs.get("reward"), int | float):
        parts.append(f"reward {logs['reward']:.2f}")
    accuracy = [v for v in (_mean(logs, n) for n in _ACCURACY) if v is not None]
    if accuracy:
        parts.append(f"acc {sum(accuracy):.2f}")
    fmt = [v for v in (_mean(logs, n) for n in _FORMAT) if v is not None]
    if fmt:
        parts.append(f"fmt {sum(fmt):.2f}")
    distill, earned = _mean(logs, "distill_reward"), _mean(logs, "distill_earned")
    if distill is not None:
        parts.append(
            f"distill {distill:.2f}"
            + (f" (earned {100 * earned:.0f}%)" if earned is not None else "")
        )
    length = _mean(logs, "length_reward")
    if length is not None:
        parts.append(f"length {length:.3f}")
    for name in ("think_tokens", "d_think_tokens"):
        value = _mean(logs, name)
        if value is not None and (name == "think_tokens" or value > 0):
            parts.append(f"{name.removesuffix('_tokens')} {value:.1f}")
    if isinstance(logs.get("kl"), int | float):
        parts.append(f"kl {logs['kl']:.4f}")
    if isinstance(logs.get("loss"), int | float) and "reward" not in logs:
        parts.append(f"loss {logs['loss']:.4f}")  # supervised runs (SFTTrainer) share the bar
        if isinstance(logs.get("mean_token_accuracy"), int | float):
            parts.append(f"token accuracy {logs['mean_token_accuracy']:.3f}")
    parts.append(f"{seconds_per_step:.1f} s/step")
    return "  ".join(parts)


class _Clock:
    def start(self, state: Any) -> None:
        self._clock = (time.perf_counter(), state.global_step)

    def line(self, state: Any, logs: dict[str, Any] | None) -> str | None:
        """The readable line of a logging step; None for the end-of-run summary."""
        if not (state.is_world_process_zero and logs):
            return None
        if not any(key.startswith(("reward", "loss")) for key in logs) or "train_runtime" in logs:
            return None  # the trainer's end-of-run summary (runtime, samples per second)
        started, first_step = self._clock
        per_step = (time.perf_counter() - started) / max(state.global_step - first_step, 1)
        return log_line(state.global_step, state.max_steps, logs, per_step)


class ReadableProgressCallback(ProgressCallback, _Clock):
    """transformers' progress bar, with one short line per logging step instead of the raw
    dict of every logged value (those go to TensorBoard and ``metrics.jsonl``)."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        self.start(state)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        line = self.line(state, logs)
        if line is not None and self.training_bar is not None:
            self.training_bar.write(line)


class ReadableLogCallback(TrainerCallback, _Clock):
    """The same lines without a bar (``disable_tqdm``: logs piped to a file)."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.start(state)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        line = self.line(state, logs)
        if line is not None:
            print(line, flush=True)


def use_readable_console(trainer: Any) -> None:
    """Swap the trainer's console callback (a bar and the raw dict of every logged value, or
    the raw dict alone with ``disable_tqdm``) for one readable line per logging step, under the
    bar unless ``disable_tqdm``. Every value still goes to TensorBoard and ``metrics.jsonl``."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if trainer.args.disable_tqdm:
        trainer.add_callback(ReadableLogCallback())
    else:
        trainer.add_callback(ReadableProgressCallback())
