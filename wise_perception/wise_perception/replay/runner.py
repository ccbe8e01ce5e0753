"""One policy's replay of one bag: the bag's frames and commands through the node's timeline,
each decided command served by the real pipeline, journaled as it is decided.

Tracking follows the node's rules (:class:`~wise_perception.command_track.CommandTracking`,
the same object the node's worker drives), in bag time: a command that asks (``"track":
true``, or ``track_default``) is followed after its result through each later frame while the
worker is idle (no command waiting), every command the worker takes ends the running track
(``preempted``; a stop: ``stopped``), and ``track_timeout_s`` counts bag seconds. Each
``track`` message (and its mask) is journaled in ``tracks.jsonl`` as it is made.

The pipeline is loaded on the first command that needs it (a replay that only continues, or
whose commands all fail before inference, loads nothing). A restarted replay re-reads the bag
from its start, re-deciding every command (cheap: pairing converts no frame), serves those its
journal lacks, and checks that the ones it has were paired the same way.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..command_track import CommandTracking, TrackOutput, track_message
from ..inputs.frame_slot import Frame
from ..result import Result, Status
from ..tracking import TrackState
from ..visualize import mask_to_uint8, overlay
from .bag import BagMessage, InputBag, Topic, typestore
from .files import FileCommand
from .journal import JournalError, RunFolder
from .output_bag import write_output_bag
from .settings import ReplaySettings
from .timeline import NANOSECONDS, Decision, NodeTimeline

FRAME, COMMAND = 0, 1  # at one bag time, a frame is taken before a command
PROGRESS_EVERY_S = 10.0  # a line on how far the bag is read, between commands


@dataclass
class ReplayInputs:
    """What is replayed: the bag, its image topic, and commands from a topic or a file."""

    bag: InputBag
    image_topic: Topic
    command_topic: Topic | None = None
    file_commands: list[FileCommand] | None = None

    @property
    def expected_commands(self) -> int:
        if self.file_commands is not None:
            return len(self.file_commands)
        return self.command_topic.count if self.command_topic else 0

    def identity(self) -> dict[str, Any]:
        """What a replay's results depend on, in the input (compared on restart)."""
        files = [self.bag.path] if self.bag.path.is_file() else sorted(self.bag.path.iterdir())
        return {
            "bag": str(self.bag.path.resolve()),
            "bag_files": {p.name: p.stat().st_size for p in files if p.is_file()},
            "image_topic": self.image_topic.name,
            "commands": (
                self.command_topic.name
                if self.command_topic
                else [[c.time_ns, c.data] for c in self.file_commands or []]
            ),
        }


@dataclass
class Event:
    time_ns: int
    kind: int  # FRAME or COMMAND
    msg: Any  # a frame message, or the command's data


@dataclass
class RunSummary:
    label: str
    folder: RunFolder
    records: list[dict[str, Any]]
    ended_early: str  # where and why the bag stopped before its end ("" when it did not)
    input_problems: list[str] = field(default_factory=list)
    served_now: int = 0  # commands served in this run (not found in the journal)
    wall_s: float = 0.0
    tracks: list[dict[str, Any]] = field(default_factory=list)  # tracks.jsonl's lines


PipelineLoader = Callable[[], Any]


class PolicyReplay:
    """Replays ``inputs`` with one policy into ``folder`` (see :mod:`.journal`)."""

    def __init__(
        self,
        label: str,
        inputs: ReplayInputs,
        settings: ReplaySettings,
        folder: RunFolder,
        load_pipeline: PipelineLoader,
        *,
        namespace: str,
        progress: TextIO | None = sys.stderr,
    ) -> None:
        self.label = label
        self.inputs = inputs
        self.settings = settings
        self.folder = folder
        self._load_pipeline = load_pipeline
        self._pipeline: Any = None
        self.namespace = namespace
        self.progress = progress
        self.problems: list[str] = []
        self._last_said = 0.0
        self._now_ns = 0  # the bag time of what is done now (tracking's clock)
        self._tracking = CommandTracking(self._journal_track, self._log_track, self._bag_s)

    def identity(self) -> dict[str, Any]:
        return {**self.inputs.identity(), "settings": self.settings.as_dict()}

    def run(self, *, restart: bool = False) -> RunSummary:
        """Replay (or continue) and write the output bag; on any stop, the output bag and the
        manifest still say what was done (and the journal keeps it)."""
        started = time.perf_counter()
        done = self.folder.open(self.identity(), restart=restart)
        manifest = self.folder.read_manifest()
        if manifest.get("finished") and self.folder.bag.is_dir():
            self._say(f"already replayed to the bag's end in {self.folder.root}")
            return self._summary(0, started, manifest)
        if done:
            self._say(f"continuing: {len(done)} command(s) already replayed in {self.folder.root}")
        served, end, finished = 0, None, False
        try:
            timeline = NodeTimeline(self.settings, self.inputs.image_topic.name)
            self._last_said = time.monotonic()  # progress lines only: results never read it
            for event in self._events():
                self._tick(event.time_ns)
                self._now_ns = event.time_ns
                if event.kind == FRAME:
                    decisions = timeline.frame(event.time_ns, event.msg)
                else:
                    decisions = timeline.command(event.time_ns, event.msg)
                served += self._handle(decisions, done)
                if event.kind == FRAME and not timeline.pending:  # the worker is idle
                    self._follow(timeline.slot.newest(), event.time_ns)
            served += self._handle(timeline.finish(), done)
            end = self.inputs.bag.end
            finished = True
        finally:
            self._tracking.drop()  # a track running at the bag's end: the node would go on
            if self._pipeline is not None:
                self._pipeline.close()
                self._pipeline = None
            records = self.folder.records()
            write_output_bag(self.folder, records, self.namespace, self.folder.track_records())
            manifest = {
                **manifest,
                "finished": finished,  # the whole bag (as far as it reads) was replayed
                "complete": finished and end is None,
                "commands": len(records),
                "ended_early": end.describe(self.inputs.bag.start_ns) if end else "",
                "input_problems": self.problems,
            }
            self.folder.write_manifest(manifest)
        if end is not None:
            self._say(end.describe(self.inputs.bag.start_ns))
        return self._summary(served, started, manifest)

    # ------------------------------------------------------------------ input
    def _events(self) -> Iterator[Event]:
        inputs, store = self.inputs, typestore()
        topics = {inputs.image_topic.name}
        if inputs.command_topic is not None:
            topics.add(inputs.command_topic.name)

        def from_bag() -> Iterator[Event]:
            for message in inputs.bag.messages(topics):
                event = self._decode(store, message)
                if event is not None:
                    yield event

        file_events = (Event(c.time_ns, COMMAND, c.data) for c in inputs.file_commands or [])
        yield from heapq.merge(from_bag(), file_events, key=lambda e: e.time_ns)

    def _decode(self, store: Any, message: BagMessage) -> Event | None:
        kind = FRAME if message.topic == self.inputs.image_topic.name else COMMAND
        try:
            msg = store.deserialize_cdr(message.raw, message.msgtype)
        except Exception as exc:  # a damaged message: the node would never have received it
            self.problems.append(
                f"{message.topic} at bag time {message.time_ns}: not a readable "
                f"{message.msgtype} ({type(exc).__name__}: {exc}); skipped"
            )
            return None
        return Event(message.time_ns, kind, msg if kind == FRAME else msg.data)

    # ------------------------------------------------------------------ serving
    def _handle(self, decisions: list[Decision], done: dict[int, dict[str, Any]]) -> int:
        served = 0
        for decision in decisions:
            stopped = self._end_track(decision)
            previous = done.get(decision.job.index)
            if previous is not None:
                _check_same(previous, decision)
                continue
            if decision.job.command.stop and decision.status is Status.STOPPED:
                error = "" if stopped else "no track was running"  # as the node answers
                decision = replace(decision, error=error)
            record, mask, picture = self._serve(decision)
            self.folder.append(record, mask, picture)
            served += 1
            self._report(record)
        return served

    def _serve(self, decision: Decision) -> tuple[dict[str, Any], np.ndarray | None, Any]:
        job, frame = decision.job, decision.frame
        pixels, pipeline_ms, track = None, None, None
        if decision.status is not None:
            result = Result.failure(job.command.text, decision.status, decision.error)
        else:
            assert frame is not None and job.command.question is not None
            try:  # checked at receipt; converted (or decoded) once, here
                image = frame.image()
            except ValueError as exc:
                result = Result.failure(job.command.text, Status.INVALID_IMAGE, str(exc))
            else:
                pipeline = self._pipeline or self._load()
                t0 = time.perf_counter()
                result = pipeline.segment(image, job.command.question, frame_key=frame.key)
                pipeline_ms = (time.perf_counter() - t0) * 1e3
                pixels = image.pixels
                wanted = job.command.track
                if wanted or (wanted is None and self.settings.track_default):
                    track = self._start_track(pipeline, decision, result)
        if pixels is None and frame is not None and not frame.error:
            pixels = _pixels_or_none(frame)  # a failure on a good frame is drawn on it too
        record = _record(decision, result, pipeline_ms, track)
        mask = None
        if result.ok and result.mask is not None:
            mask = mask_to_uint8(result.mask, result.mask.shape)
        return record, mask, overlay(pixels, result) if pixels is not None else None

    # ------------------------------------------------------------------ tracking
    def _bag_s(self) -> float:
        """Tracking's clock: seconds of bag time since the bag's start."""
        return (self._now_ns - self.inputs.bag.start_ns) / NANOSECONDS

    def _start_track(self, pipeline: Any, decision: Decision, result: Result) -> dict[str, Any]:
        """Seed a track with the command's answer on its frame, at the decision's bag time."""
        job, frame = decision.job, decision.frame
        assert frame is not None and job.command.question is not None
        self._now_ns = decision.at_ns
        return self._tracking.start(
            pipeline,
            self.settings.track_settings(),
            job.index,
            job.command.id,
            job.command.question,
            frame,
            result,
        )

    def _end_track(self, decision: Decision) -> bool:
        """The worker took the command (``by_worker``): the running track ends, ``stopped`` by
        a stop and ``preempted`` by any other, at the bag time it was taken. Whether a track
        was running (what a stop answers)."""
        if not decision.by_worker or not self._tracking.running:
            return False
        job = decision.job
        assert job.started_ns is not None
        self._now_ns = job.started_ns
        state = TrackState.STOPPED if job.command.stop else TrackState.PREEMPTED
        return self._tracking.end(state, f"by request {job.index}")

    def _follow(self, frame: Frame | None, time_ns: int) -> None:
        """The idle worker tracks the newest frame (the node's ``_follow``)."""
        if not self._tracking.running or self._pipeline is None:
            return
        self._now_ns = time_ns
        self._tracking.follow(
            self._pipeline,
            frame,
            self.settings.track_settings(),
            reground=self.settings.reground_on_loss,
        )

    def _journal_track(self, out: TrackOutput) -> None:
        """One ``track`` message (and for a tracked frame or a new answer its mask), with the
        header of the frame it was computed on, at the bag time it was made."""
        record = {
            "index": out.track.request_id,
            "kind": out.kind,
            "at_ns": self._now_ns,
            "track": track_message(out.report, out.header),
        }
        mask = None if out.mask is None else mask_to_uint8(out.mask, out.mask.shape)
        self.folder.append_track(record, mask)

    def _log_track(self, level: int, message: str) -> None:
        self._say(message)  # what a track met is in its messages too (refused frames, errors)

    def _load(self) -> Any:
        self._say("loading the models")
        started = time.perf_counter()
        self._pipeline = self._load_pipeline()
        if self.settings.warmup:  # as the node does on activate: the first command is not slow
            self._pipeline.warmup()
        self._say(f"models loaded in {time.perf_counter() - started:.1f} s")
        return self._pipeline

    # ------------------------------------------------------------------ reporting
    def _report(self, record: dict[str, Any]) -> None:
        result = record["result"]
        total = max(self.inputs.expected_commands, record["index"])
        at = (record["received_ns"] - self.inputs.bag.start_ns) / NANOSECONDS
        frame = f" on {result['frame_id']!r}" if record["frame"] else ""
        took = result["node"].get("pipeline_ms")
        cost = f", #Tok {result['reasoning_tokens']}, {took:.0f} ms" if took is not None else ""
        self._say(
            f"command {record['index']}/{total} at {at:.2f} s: {result['status']}{cost}{frame}"
            f" | {result['command'][:60]!r}"
        )

    def _tick(self, time_ns: int) -> None:
        if time.monotonic() - self._last_said < PROGRESS_EVERY_S:
            return
        bag = self.inputs.bag
        done = (time_ns - bag.start_ns) / NANOSECONDS
        self._say(
            f"read the bag to {done:.1f} s of {(bag.end_ns - bag.start_ns) / NANOSECONDS:.1f} s"
        )

    def _say(self, text: str) -> None:
        self._last_said = time.monotonic()
        if self.progress is not None:
            print(f"[{self.label}] {text}", file=self.progress, flush=True)

    def _summary(self, served: int, started: float, manifest: dict[str, Any]) -> RunSummary:
        return RunSummary(
            self.label,
            self.folder,
            self.folder.records(),
            manifest.get("ended_early", ""),
            list(manifest.get("input_problems", [])),
            served,
            time.perf_counter() - started,
            self.folder.track_records(),
        )


def _pixels_or_none(frame: Frame) -> np.ndarray | None:
    try:
        return frame.image().pixels
    except ValueError:
        return None


def _record(
    decision: Decision,
    result: Result,
    pipeline_ms: float | None,
    track: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The journal line of one command: the node's result message (as JSON), and when and on
    which frame the node decided it."""
    job, frame = decision.job, decision.frame
    if frame is not None:
        stamp = frame.msg.header.stamp
        stamp_dict = {"sec": int(stamp.sec), "nanosec": int(stamp.nanosec)}
        frame_id = str(frame.msg.header.frame_id)
    else:  # the node's clock, which is the bag's
        stamp_dict = {"sec": decision.at_ns // NANOSECONDS, "nanosec": decision.at_ns % NANOSECONDS}
        frame_id = ""
    node: dict[str, Any] = {
        "request_id": job.index,
        "queue_wait_ms": round(decision.queue_wait_ns / 1e6, 3),
    }
    if decision.image_wait_ns is not None:
        node["image_wait_ms"] = round(decision.image_wait_ns / 1e6, 3)
    if decision.image_age_s is not None:
        node["image_age_ms"] = round(decision.image_age_s * 1e3, 3)
    if pipeline_ms is not None:
        node["pipeline_ms"] = round(pipeline_ms, 3)
    waits = ("queue_wait_ms", "image_wait_ms", "pipeline_ms")
    node["latency_ms"] = round(sum(node.get(k, 0.0) for k in waits), 3)
    message = {
        **result.to_dict(),
        "id": job.command.id,
        "stamp": stamp_dict,
        "frame_id": frame_id,
        "node": node,
        **({"track": track} if track is not None else {}),  # as the node's result says
    }
    return {
        "index": job.index,
        "received_ns": job.received_ns,
        "decided_ns": decision.at_ns,
        "frame": {"seq": frame.seq, "frame_id": frame_id, "stamp": stamp_dict} if frame else None,
        "result": message,
    }


def _check_same(previous: dict[str, Any], decision: Decision) -> None:
    """A command found in the journal must have been decided as now (same bag, same rules)."""
    frame = decision.frame
    now = {
        "received_ns": decision.job.received_ns,
        "decided_ns": decision.at_ns,
        "frame_seq": frame.seq if frame else None,
    }
    before = {
        "received_ns": previous["received_ns"],
        "decided_ns": previous["decided_ns"],
        "frame_seq": previous["frame"]["seq"] if previous["frame"] else None,
    }
    if now != before:
        raise JournalError(
            f"command {decision.job.index} was decided {before} by the replay in the journal "
            f"and {now} now: the journal is of another bag; pass --restart"
        )


def label_path(out: Path, label: str) -> RunFolder:
    return RunFolder(out / label)
