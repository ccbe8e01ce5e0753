"""Resumable stages: each stage records, when it finishes, a fingerprint of the settings it ran
with (its own and its inputs'); a later run skips a stage whose record matches, and re-runs it
(from a clean folder) and everything after it otherwise. Wall and CPU time are measured per
stage: the CPU is often shared, so wall time alone over-states the cost."""

from __future__ import annotations

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
    settings: str = ""  # what the fingerprint covers beyond the preset and the inputs


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
        self._upstream = ""

    def _save(self) -> None:
        (self.root / RECORD_NAME).write_text(json.dumps(self.record, indent=2) + "\n")

    def run(self, stages: list[Stage], *, restart: bool = False) -> None:
        rerun = restart  # once a stage runs, every later one runs too (its inputs changed)
        for number, stage in enumerate(stages, 1):
            key = self.fingerprint(stage.name, stage.settings, self._upstream)
            self._upstream = key
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


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
