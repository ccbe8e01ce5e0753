"""Resumable stages: each stage records, when it finishes, a fingerprint of the settings it ran
with (its own and, through the stage before it, its inputs'); a later run skips a stage whose
record matches, and re-runs it (from a clean folder) and everything after it otherwise. Wall and
CPU time are measured per stage: the CPU is often shared, so wall time alone over-states the
cost."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RECORD_NAME = "stages.json"


@dataclass
class StageTiming:
    name: str
    wall_s: float
    cpu_s: float
    skipped: bool = False


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[Path], None]
    folder: str  # under the run folder; cleared before the stage runs
    settings: str = ""  # the settings it reads (the stages before it are covered by the chain)


@dataclass
class StageRunner:
    root: Path
    fingerprint: Callable[..., str]
    log: Callable[[str], None] = print
    timings: list[StageTiming] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / RECORD_NAME
        self.record: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}

    def _save(self) -> None:
        (self.root / RECORD_NAME).write_text(json.dumps(self.record, indent=2) + "\n")

    def keys(self, stages: list[Stage]) -> list[str]:
        """Each stage's fingerprint: its name and settings, chained to the one before it's."""
        keys, upstream = [], ""
        for stage in stages:
            upstream = self.fingerprint(stage.name, stage.settings, upstream)
            keys.append(upstream)
        return keys

    def run(self, stages: list[Stage], *, restart: bool = False) -> None:
        rerun = restart  # once a stage runs, every later one runs too (its inputs changed)
        for number, (stage, key) in enumerate(zip(stages, self.keys(stages), strict=True), 1):
            done = self.record.get(stage.name)
            head = f"[{number}/{len(stages)}] {stage.title}"
            if done and done.get("fingerprint") == key and not rerun:
                self.log(f"{head}: done earlier, kept")
                self.timings.append(StageTiming(stage.name, done["wall_s"], done["cpu_s"], True))
                continue
            self.log(head)
            rerun = True
            self.record.pop(stage.name, None)
            self._save()
            folder = self.root / stage.folder
            if folder.exists() and folder != self.root:
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            wall, cpu = time.perf_counter(), time.process_time()
            stage.run(folder)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            self.record[stage.name] = {"fingerprint": key, "wall_s": wall, "cpu_s": cpu}
            self._save()
            self.timings.append(StageTiming(stage.name, wall, cpu))
            self.log(f"    {stage.name} done: {clock(wall)} wall, {clock(cpu)} CPU")


def fingerprint(*parts: str) -> str:
    """A short hash of ``parts``."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
