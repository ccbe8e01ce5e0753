"""The node's command path, in bag time: which frame each command gets, and when.

The live node (``node/lifecycle.py``) parses a command on receipt (``invalid_command`` at
once), pairs it with the newest frame at most ``max_image_age_s`` old (:class:`FrameSlot`,
the same object here, on the bag's clock), and queues it for its one worker
(``queue_full`` when ``queue_size`` already wait). The worker serves a paired command at once;
an unpaired one waits until ``command_wait_s`` after its receipt for a usable frame, re-checked
on every frame that arrives, and then gets ``no_image`` (:meth:`FrameSlot.why_none_usable`).
An invalid newest frame answers ``invalid_image``. A stop (``{"stop": true}``) is queued like a
command and served in its turn: the worker ends the running track, if any, and answers
``stopped``. Every command the worker takes first ends the running track (it preempts it); what
tracking does is the runner's (:mod:`wise_perception.command_track`, the node's rules), done
whenever the worker is idle (:attr:`NodeTimeline.pending` is 0) on the newest frame.

:class:`NodeTimeline` makes those same decisions as the bag's messages come, with every
decision at a bag time: the frame slot's clocks are the bag's (a message's log time is when
the node would have received it). Inference takes no bag time here: that is the one
difference from a live node, whose busy worker can make later commands wait (and the queue
fill) for as long as inference takes, and skips the frames that arrive while it tracks one
(newest wins), where a replay tracks every frame. So a replay's pairing never depends on how
fast the machine replays; on a live node it matches whenever the worker was idle when a command
came (tests/replay/test_dds_recording.py runs both on one stream).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..inputs.commands import Command, parse_command
from ..inputs.frame_slot import Frame, FrameSlot
from ..result import Status
from .settings import ReplaySettings

NANOSECONDS = 1_000_000_000


@dataclass
class Job:
    """One command as the node holds it."""

    index: int  # 1-based, in order of receipt (the node's request_id)
    received_ns: int
    data: str  # the command message as sent
    command: Command
    frame: Frame | None = None  # paired on receipt
    started_ns: int | None = None  # when the worker took it
    deadline_ns: int = 0  # received + command_wait_s


@dataclass(frozen=True)
class Decision:
    """What the node does with one command, and when (bag time).

    ``status`` None: run the pipeline on ``frame`` (whose conversion may still fail, as in the
    node: ``invalid_image``); otherwise the command fails with it. ``frame`` gives every output
    its header; a failure without a frame is stamped with ``at_ns`` and an empty frame_id. A
    stop's decision is ``stopped`` with no error yet: whether a track was running is for the
    tracking to say."""

    job: Job
    at_ns: int
    status: Status | None
    error: str
    frame: Frame | None
    queue_wait_ns: int = 0
    image_wait_ns: int | None = None  # how long it waited for a frame (None: paired on receipt)
    image_age_s: float | None = None

    @property
    def by_worker(self) -> bool:
        """Whether the worker took the command (at ``job.started_ns``), which ends the running
        track; a command refused on receipt (invalid, queue full) never reaches it."""
        return self.job.started_ns is not None


class NodeTimeline:
    """Feed it the bag's frames and commands in bag time; it returns the node's decisions."""

    def __init__(self, settings: ReplaySettings, image_topic: str = "image") -> None:
        self.settings = settings
        self.image_topic = image_topic
        self.now_ns = 0
        self.slot = FrameSlot(lambda: self.now_ns, monotonic=lambda: self.now_ns / NANOSECONDS)
        self._queue: deque[Job] = deque()
        self._waiting: Job | None = None  # the worker waits for a frame for this one
        self._received = 0

    # ------------------------------------------------------------------ the bag's messages
    def frame(self, time_ns: int, msg: Any) -> list[Decision]:
        """A frame received at ``time_ns``: the newest one now; a waiting command re-checks."""
        decisions = self._advance(time_ns)
        self.slot.put(msg, self.settings.max_image_pixels)
        if self._waiting is not None:
            frame = self.slot.usable(self.settings.max_image_age_s)
            if frame is not None:
                decisions.append(self._paired(self._waiting, frame))
                self._waiting = None
                decisions += self._drain()
        return decisions

    def command(self, time_ns: int, data: str) -> list[Decision]:
        """A command message received at ``time_ns`` (lifecycle ``_on_command``/``_accept``)."""
        decisions = self._advance(time_ns)
        self._received += 1
        job = Job(
            self._received, time_ns, data, parse_command(data, self.settings.max_command_chars)
        )
        job.deadline_ns = time_ns + round(self.settings.command_wait_s * NANOSECONDS)
        size = self.settings.queue_size
        if job.command.stop:  # served in order by the worker, which ends the running track
            return decisions + self._offer(job, f"rejected: queue_size={size} full")
        if job.command.question is None:
            return [*decisions, self._fail(job, Status.INVALID_COMMAND, job.command.error)]
        job.frame = self.slot.usable(self.settings.max_image_age_s)
        full = f"rejected: {size} command(s) already waiting (queue_size={size})"
        return decisions + self._offer(job, full)

    def finish(self) -> list[Decision]:
        """The bag ended: no frame comes any more, so waiting commands time out."""
        return self._advance(None)

    @property
    def pending(self) -> int:
        """Commands received and not decided yet."""
        return len(self._queue) + (self._waiting is not None)

    def _offer(self, job: Job, full: str) -> list[Decision]:
        """Queue ``job`` (the worker takes it at once when idle); ``queue_full`` when full."""
        if self._waiting is None and not self._queue:
            return self._start(job)
        if len(self._queue) >= self.settings.queue_size:
            return [self._fail(job, Status.QUEUE_FULL, full, job.frame)]
        self._queue.append(job)
        return []

    # ------------------------------------------------------------------ the worker
    def _advance(self, time_ns: int | None) -> list[Decision]:
        """Time passes until ``time_ns`` (None: forever): waits that run out end in no_image,
        and the worker goes on with the queue."""
        decisions = []
        while self._waiting is not None and (
            time_ns is None or self._waiting.deadline_ns < time_ns
        ):
            job, self._waiting = self._waiting, None
            self.now_ns = max(self.now_ns, job.deadline_ns)
            decisions.append(self._no_image(job))
            decisions += self._drain()
        if time_ns is not None:
            self.now_ns = max(self.now_ns, time_ns)  # never backwards (bag order ties)
        return decisions

    def _drain(self) -> list[Decision]:
        decisions = []
        while self._waiting is None and self._queue:
            decisions += self._start(self._queue.popleft())
        return decisions

    def _start(self, job: Job) -> list[Decision]:
        """The worker takes ``job`` now (lifecycle ``_serve``)."""
        job.started_ns = self.now_ns
        if job.command.stop:
            return [self._decided(job, Status.STOPPED, "")]
        if job.frame is not None:
            return [self._paired(job, job.frame)]
        frame = self.slot.usable(self.settings.max_image_age_s)  # wait_usable's first look
        if frame is not None:
            return [self._paired(job, frame, waited=True)]
        if self.now_ns >= job.deadline_ns:
            return [self._no_image(job)]
        self._waiting = job
        return []

    # ------------------------------------------------------------------ decisions
    def _paired(self, job: Job, frame: Frame, waited: bool | None = None) -> Decision:
        assert job.started_ns is not None
        waited = job.frame is None if waited is None else waited
        common = {
            "job": job,
            "at_ns": self.now_ns,
            "frame": frame,
            "queue_wait_ns": job.started_ns - job.received_ns,
            "image_wait_ns": self.now_ns - job.started_ns if waited else None,
        }
        if frame.error:  # found at receipt
            return Decision(status=Status.INVALID_IMAGE, error=frame.error, **common)
        return Decision(status=None, error="", image_age_s=self.slot.age(frame), **common)

    def _no_image(self, job: Job) -> Decision:
        reason = self.slot.why_none_usable(
            self.image_topic, self.settings.max_image_age_s, self.settings.command_wait_s
        )
        return self._decided(job, Status.NO_IMAGE, reason, waited=True)

    def _decided(self, job: Job, status: Status, error: str, *, waited: bool = False) -> Decision:
        """A command the worker took and answers without a frame."""
        assert job.started_ns is not None
        return Decision(
            job,
            self.now_ns,
            status,
            error,
            None,
            queue_wait_ns=job.started_ns - job.received_ns,
            image_wait_ns=self.now_ns - job.started_ns if waited else None,
        )

    def _fail(self, job: Job, status: Status, error: str, frame: Frame | None = None) -> Decision:
        return Decision(job, self.now_ns, status, error, frame)
