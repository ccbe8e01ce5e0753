"""One command's track, as the node runs it: which frame it tracks next, and what it reports.

The node's worker follows a track as idle work (while no command waits): each time, the
newest frame, if it came after the last one tracked. Frames arriving faster than tracking runs
are skipped (newest wins) and counted; a frame the tracker refuses (invalid, or of another
size) is counted and passed over, and the track goes on. ROS-free: the node publishes what
:meth:`CommandTrack.report` says.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..core.limits import ECHO_CHARS, bounded
from ..core.prompts import Question
from ..tracking import Track, TrackState, TrackUpdate

RATE_WINDOW_S = 2.0  # the tracking rate is measured over the frames of the last 2 seconds


@dataclass
class CommandTrack:
    """A command's :class:`~wise_perception.tracking.Track` and the node's bookkeeping."""

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
    _times: deque[float] = field(default_factory=deque, repr=False)

    def wants(self, seq: int) -> bool:
        """Whether the frame ``seq`` is newer than the last one looked at."""
        return seq > self.last_seq

    def tracked_frame(self, seq: int, header: Any, update: TrackUpdate) -> None:
        self._seen(seq)
        self.header, self.last = header, update
        self.tracked += 1
        now = time.monotonic()
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
        if len(times) < 2 or time.monotonic() - times[-1] > RATE_WINDOW_S:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    @property
    def state(self) -> TrackState:
        return self.track.state

    def report(self) -> dict[str, Any]:
        """The ``track`` topic's JSON fields (the node adds the frame's stamp and frame_id): the
        last update, the track's state and error, the ids and the counters."""
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
