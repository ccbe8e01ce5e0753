"""Reason once, then track: one command's answer followed through later frames, with its end.

A :class:`Track` wraps a segmenter's :class:`~.segmenter.tracking.Tracker` seeded with a
successful :class:`~.result.Result` on the frame it was answered on, and says on each newer
frame where the object is and what state the track is in. It ends when the object is lost (its
score below ``score_threshold`` for ``lost_after`` frames in a row), when it has run for
``timeout_s``, or when its owner ends it (a ``stop`` command, or a new command that preempts
it). The node, the CLI and the benchmark all drive this class; it knows nothing of ROS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from .core.answer import ObjectPrompt
from .result import Result
from .segmenter.tracking import Tracker, TrackStep


class TrackState(str, Enum):
    TRACKING = "tracking"  # the object is being followed
    LOST = "lost"  # score below the threshold for lost_after frames in a row
    TIMEOUT = "timeout"  # tracked for timeout_s
    STOPPED = "stopped"  # a stop command
    PREEMPTED = "preempted"  # a new command took over
    FAILED = "failed"  # the tracker failed (the reason is in Track.error)


SEED_CHOICES = ("prompts", "masks")


@dataclass(frozen=True)
class TrackSettings:
    """How a track is seeded and when it ends."""

    # SAM2's object score is a visibility logit; 0.5 after the sigmoid is its own decision
    # threshold (Sam2VideoModel: is_obj_appearing = object_score_logits > 0).
    score_threshold: float = 0.5
    lost_after: int = 5  # frames in a row below the threshold before the object is lost
    timeout_s: float = 0.0  # seconds of tracking before it ends; 0: no limit
    # Seed with the answer's boxes and points (SAM2 segments the seed frame again, as a click
    # would), or with the result's masks (the track starts from exactly the mask published).
    seed_with: str = "prompts"

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.lost_after < 1:
            raise ValueError(f"lost_after must be >= 1, got {self.lost_after}")
        if self.timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {self.timeout_s}")
        if self.seed_with not in SEED_CHOICES:
            raise ValueError(f"seed_with must be one of {SEED_CHOICES}, got {self.seed_with!r}")

    @classmethod
    def from_parameters(cls, parameters: Any) -> TrackSettings:
        """From the node's parameters (``track_score_threshold``, ``track_lost_after``,
        ``track_timeout_s``, ``track_seed_with``: the node's settings or a replay's)."""
        return cls(
            score_threshold=parameters.track_score_threshold,
            lost_after=parameters.track_lost_after,
            timeout_s=parameters.track_timeout_s,
            seed_with=parameters.track_seed_with,
        )


@dataclass
class TrackUpdate:
    """One frame of a track: the tracker's step and the track's state after it."""

    step: TrackStep
    state: TrackState
    low_frames: int  # frames in a row with the score below the threshold, this one included

    def to_dict(self) -> dict[str, Any]:
        """The ``track`` topic's fields (the node adds ids and the frame's stamp)."""
        box = self.step.box
        return {
            "state": self.state.value,
            "frame_index": self.step.index,
            "score": round(self.step.score, 4),
            "box": [float(v) for v in box] if box is not None else None,
            "objects": [
                {
                    "box": [float(v) for v in obj.box] if obj.box is not None else None,
                    "score": round(obj.score, 4),
                }
                for obj in self.step.objects
            ],
            "mask_pixels": int(self.step.mask.sum()),
            "track_ms": round(self.step.seconds * 1000.0, 3),
        }


class Track:
    """One command's track (module doc). Not thread-safe: one owner drives it."""

    def __init__(self, tracker: Tracker, settings: TrackSettings | None = None) -> None:
        self.tracker = tracker
        self.settings = settings or TrackSettings()
        self.state = TrackState.TRACKING
        self.error = ""
        self.frames = 0  # frames tracked after the seed frame
        self._low = 0
        self._started_at = 0.0

    @property
    def active(self) -> bool:
        return self.state is TrackState.TRACKING

    def start(self, image: np.ndarray, result: Result, *, at: float | None = None) -> TrackUpdate:
        """Seed on ``image``, the frame ``result`` was answered on (an ``ok`` result with
        objects). ``at``: the seed frame's time in seconds (default: now, monotonic); the
        timeout counts from it. Raises ValueError for a result that cannot be tracked."""
        if not result.ok or not result.objects:
            raise ValueError(
                f"only a successful answer with objects can be tracked (status "
                f"{result.status.value}, {len(result.objects)} objects)"
            )
        objects = [ObjectPrompt(o.box, tuple(o.points)) for o in result.objects]
        masks = None
        if self.settings.seed_with == "masks":
            masks = [o.mask for o in result.objects]
            if any(m is None for m in masks):
                raise ValueError("seed_with masks needs the result's masks")
        self._started_at = time.monotonic() if at is None else at
        step = self.tracker.start(image, objects, masks=masks)
        # The seed frame is the answer's own: the object is there by definition, whatever
        # SAM2's score says, so only later frames count towards a loss.
        return TrackUpdate(step=step, state=self.state, low_frames=0)

    def update(self, image: np.ndarray, *, at: float | None = None) -> TrackUpdate:
        """Track one newer frame (``at``: its time, as in :meth:`start`). Raises RuntimeError
        when the track has ended; ValueError for a frame the tracker refuses (the track goes
        on with the next frame)."""
        if not self.active:
            raise RuntimeError(f"the track has ended ({self.state.value})")
        try:
            step = self.tracker.step(image)
        except ValueError:  # a frame the tracker refuses: the track goes on
            raise
        except Exception as exc:
            self.end(TrackState.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        self.frames += 1
        return self._judge(step, time.monotonic() if at is None else at)

    def _judge(self, step: TrackStep, now: float) -> TrackUpdate:
        self._low = self._low + 1 if step.score < self.settings.score_threshold else 0
        if self._low >= self.settings.lost_after:
            self.end(TrackState.LOST)
        elif self.settings.timeout_s and now - self._started_at >= self.settings.timeout_s:
            self.end(TrackState.TIMEOUT)
        return TrackUpdate(step=step, state=self.state, low_frames=self._low)

    def end(self, state: TrackState, error: str = "") -> None:
        """End the track (``stopped``, ``preempted``...) and drop the tracker's state; the
        first end wins."""
        if self.active:
            self.state = state
            self.error = error
        self.tracker.close()
