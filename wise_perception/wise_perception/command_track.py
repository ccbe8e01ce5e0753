"""The node's tracking rules, without ROS: one command's track at a time, run by one worker.

Reason once, then track: a command that asks (``"track": true``, or ``track_default``) is
followed after its result by SAM2's video memory (:mod:`.tracking`). The node's inference
worker (``node/lifecycle.py``) and the bag replay (``replay/runner.py``) both drive
:class:`CommandTracking`, so the rules exist once:

* :meth:`CommandTracking.start` seeds the track on the frame the command was answered on,
  after its result (``not_started`` and why when there is no answer or SAM2 cannot track);
* :meth:`CommandTracking.follow` is the worker's idle work: the newest frame, if it came after
  the last one looked at (frames in between are skipped and counted: newest wins), gets a
  tracked mask and a ``track`` message with that frame's header. A frame the tracker refuses
  (invalid, or of another size) is counted and passed over, and the track goes on. A tracker
  failure ends the track (``failed``). On a loss, with ``reground``, the policy is asked again
  with the same command on that frame and its new answer tracked (tracking output, never a
  second result);
* :meth:`CommandTracking.end` ends it: ``preempted`` by the next command served, ``stopped``
  by ``{"stop": true}``, or by whoever releases the models; it says so on ``track`` unless the
  last tracked frame's message already did (a loss or a timeout).

What is published goes to the ``emit`` callback as :class:`TrackOutput`: the node publishes it
on ``mask`` and ``track`` (and ``overlay``); the replay journals it. Time is injected: the node
tracks on its monotonic clock (the default), the replay on the bag's, so a timeout counts
bag seconds there.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .core.limits import ECHO_CHARS, bounded
from .core.prompts import Question
from .inputs.frame_slot import Frame
from .result import Result
from .tracking import Track, TrackSettings, TrackState, TrackUpdate

RATE_WINDOW_S = 2.0  # the tracking rate is measured over the frames of the last 2 seconds

Clock = Callable[[], float]  # seconds, monotonic
Log = Callable[[int, str], None]  # (logging level, message)


class TrackingPipeline(Protocol):
    """What tracking calls on the pipeline (:class:`~wise_perception.pipeline.WisePipeline`)."""

    def segment(self, image: Any, command: Any, *, frame_key: Any = None) -> Result: ...

    def track(
        self, image: Any, result: Result, settings: TrackSettings | None = None, *, at: Any = None
    ) -> tuple[Track, TrackUpdate]: ...


@dataclass
class CommandTrack:
    """A command's :class:`~wise_perception.tracking.Track` and the worker's bookkeeping."""

    track: Track
    request_id: int
    command_id: Any  # the caller's id (JSON "id"), echoed
    question: Question  # the command, for re-grounding on loss
    last_seq: int  # frame-slot sequence number of the last frame looked at
    header: Any  # header of the last frame tracked (the answer's frame at first)
    last: TrackUpdate
    tracked: int = 0  # frames tracked after the answer's frame
    skipped: int = 0  # frames that came and were replaced before the worker got to them
    refused: int = 0  # frames the tracker could not take (invalid, another size)
    regrounded: int = 0  # new answers after a loss (reground_on_loss)
    clock: Clock = field(default=time.monotonic, repr=False)  # for the rate
    _times: deque[float] = field(default_factory=deque, repr=False)

    def wants(self, seq: int) -> bool:
        """Whether the frame ``seq`` is newer than the last one looked at."""
        return seq > self.last_seq

    def tracked_frame(self, seq: int, header: Any, update: TrackUpdate) -> None:
        self._seen(seq)
        self.header, self.last = header, update
        self.tracked += 1
        now = self.clock()
        self._times.append(now)
        while self._times and now - self._times[0] > RATE_WINDOW_S:
            self._times.popleft()

    def refused_frame(self, seq: int) -> None:
        self._seen(seq)
        self.refused += 1

    def reseeded(self, track: Track, seq: int, header: Any, update: TrackUpdate) -> None:
        """A new answer after a loss: the track starts again from it."""
        self._seen(seq)
        self.track, self.header, self.last = track, header, update
        self.regrounded += 1

    def _seen(self, seq: int) -> None:
        self.skipped += max(seq - self.last_seq - 1, 0)
        self.last_seq = seq

    def rate_hz(self) -> float:
        """Tracked frames per second over the last :data:`RATE_WINDOW_S` seconds."""
        times = self._times
        if len(times) < 2 or self.clock() - times[-1] > RATE_WINDOW_S:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    @property
    def state(self) -> TrackState:
        return self.track.state

    def report(self) -> dict[str, Any]:
        """The ``track`` topic's JSON fields (:func:`track_message` adds the frame's stamp and
        frame_id): the last update, the track's state and error, the ids and the counters."""
        memory = self.track.tracker.memory()
        return {
            "id": self.command_id,
            "request_id": self.request_id,
            "command": bounded(self.question.sent, ECHO_CHARS),
            **self.last.to_dict(),
            "state": self.track.state.value,  # the track's, which its owner may have ended
            "error": self.track.error,
            "tracked_frames": self.tracked,
            "skipped_frames": self.skipped,
            "refused_frames": self.refused,
            "regrounded": self.regrounded,
            "rate_hz": round(self.rate_hz(), 2),
            "memory_frames": memory.memory_frames,
        }

    def status(self) -> dict[str, Any]:
        """What /diagnostics says of the track."""
        memory = self.track.tracker.memory()
        return {
            "state": self.track.state.value,
            "request_id": self.request_id,
            "id": self.command_id,
            "rate_hz": round(self.rate_hz(), 2),
            "tracked_frames": self.tracked,
            "skipped_frames": self.skipped,
            "refused_frames": self.refused,
            "regrounded": self.regrounded,
            "memory_frames": memory.memory_frames,
            "state_bytes": memory.state_bytes,
        }


TRACKED, REGROUNDED, ENDED = "tracked", "regrounded", "ended"


@dataclass
class TrackOutput:
    """What the worker publishes for a track at one moment: a ``track`` message and, for a
    tracked frame or a re-grounded answer, its mask on ``mask``; all with ``header``, the
    header of the frame it was computed on (for an end: the last frame tracked)."""

    kind: str  # TRACKED, REGROUNDED or ENDED
    track: CommandTrack
    report: dict[str, Any]  # CommandTrack.report() when it was published
    header: Any
    update: TrackUpdate  # the track's last update then (what an overlay draws)
    mask: np.ndarray | None = field(default=None, repr=False)  # HxW bool; None for an end
    pixels: np.ndarray | None = field(default=None, repr=False)  # the frame (for an overlay)


def track_message(report: dict[str, Any], header: Any) -> dict[str, Any]:
    """The ``track`` topic's JSON: ``report`` with the ``stamp`` and ``frame_id`` of the frame
    it was computed on."""
    stamp = {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)}
    return {**report, "stamp": stamp, "frame_id": str(header.frame_id)}


def not_started(error: str) -> dict[str, Any]:
    """What a tracked command's result says when its track could not start."""
    return {"state": "not_started", "error": error}


class CommandTracking:
    """At most one command's track, with the node's rules (module doc). Not thread-safe: one
    worker drives it (the node holds its pipeline lock around every call)."""

    def __init__(
        self,
        emit: Callable[[TrackOutput], None],
        log: Log | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.emit = emit
        self.log: Log = log or (lambda level, message: None)
        # None: each Track times itself on the monotonic clock (the node); else e.g. bag time
        self.clock = clock
        self.current: CommandTrack | None = None
        self.status: dict[str, Any] = {"state": "idle"}  # for /diagnostics: running or last

    @property
    def running(self) -> bool:
        return self.current is not None

    def _at(self) -> float | None:
        return self.clock() if self.clock is not None else None

    def start(
        self,
        pipeline: TrackingPipeline,
        settings: TrackSettings,
        request_id: int,
        command_id: Any,
        question: Question,
        frame: Frame,
        result: Result,
    ) -> dict[str, Any]:
        """Seed a track with a command's answer on its frame (the worker has ended the previous
        one when it took the command); returns what the result says of it."""
        if not result.ok:
            return not_started(f"no answer to track ({result.status.value})")
        try:
            track, seed = pipeline.track(frame.image(), result, settings, at=self._at())
        except Exception as exc:  # TrackingUnsupported names why this SAM2 cannot
            error = f"{type(exc).__name__}: {exc}"
            self.log(logging.ERROR, f"request {request_id}: cannot track: {error}")
            return not_started(error)
        self.current = CommandTrack(
            track,
            request_id,
            command_id,
            question,
            frame.seq,
            frame.msg.header,
            seed,
            clock=self.clock or time.monotonic,
        )
        self.status = self.current.status()
        return {"state": track.state.value, "error": ""}

    def follow(
        self,
        pipeline: TrackingPipeline,
        frame: Frame | None,
        settings: TrackSettings,
        *,
        reground: bool,
    ) -> None:
        """Track ``frame`` (the newest) if it came after the last one looked at."""
        current = self.current
        if current is None or frame is None or not current.wants(frame.seq):
            return
        try:
            image = frame.image()  # checked at receipt: ValueError names its problem
            update = current.track.update(image.pixels, at=self._at())
        except ValueError as exc:  # this frame cannot be tracked; the next one may
            current.refused_frame(frame.seq)
            self.status = current.status()
            self.log(
                logging.WARNING,
                f"tracking request {current.request_id}: frame {frame.frame_id!r} refused: {exc}",
            )
            return
        except Exception as exc:  # the tracker failed: the track has ended (failed)
            error = f"{type(exc).__name__}: {exc}"
            self.log(logging.ERROR, f"tracking request {current.request_id} failed: {error}")
            self.end(TrackState.FAILED, error)
            return
        current.tracked_frame(frame.seq, frame.msg.header, update)
        self._emit(TRACKED, current, update.step.mask, image.pixels)
        if current.state is TrackState.LOST and reground:
            self._reground(pipeline, settings, current, frame, image)
        if not current.track.active:
            self.end(current.state, current.track.error)
        else:
            self.status = current.status()

    def _reground(
        self,
        pipeline: TrackingPipeline,
        settings: TrackSettings,
        current: CommandTrack,
        frame: Frame,
        image: Any,
    ) -> None:
        """The object is lost: ask the policy again with the same command on this frame and
        track its new answer (a ``track`` message and its mask, never a second result)."""
        result = pipeline.segment(image, current.question, frame_key=frame.key)
        if not result.ok:
            current.track.error = f"re-grounding got {result.status.value}: {result.error}"
            return
        try:
            track, seed = pipeline.track(image, result, settings, at=self._at())
        except Exception as exc:
            current.track.error = f"re-grounding: {type(exc).__name__}: {exc}"
            return
        current.reseeded(track, frame.seq, frame.msg.header, seed)
        self.log(
            logging.INFO,
            f"tracking request {current.request_id}: lost, re-grounded on frame "
            f"{frame.frame_id!r} ({current.regrounded} so far)",
        )
        self._emit(REGROUNDED, current, result.mask, image.pixels)

    def end(self, state: TrackState, error: str = "") -> bool:
        """End the running track, if any (False when none ran), and say so on ``track``
        unless its last tracked frame's message already did (a loss or a timeout with
        nothing more to say)."""
        current, self.current = self.current, None
        if current is None:
            return False
        current.track.end(state, error)
        self.status = current.status()
        said = current.state in (TrackState.LOST, TrackState.TIMEOUT) and not current.track.error
        if not said:
            self._emit(ENDED, current, None, None)
        return True

    def drop(self) -> None:
        """Forget the running track, if any, without a message (its tracker's memory freed):
        the replay at the bag's end, where a node would go on tracking."""
        current, self.current = self.current, None
        if current is not None:
            current.track.tracker.close()

    def _emit(self, kind: str, current: CommandTrack, mask: np.ndarray | None, pixels: Any) -> None:
        self.emit(
            TrackOutput(
                kind,
                current,
                current.report(),
                current.header,
                current.last,
                mask,
                pixels,
            )
        )
