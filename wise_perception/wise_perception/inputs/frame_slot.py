"""The newest camera frame, which a command is paired with: one slot, never a backlog.

A frame is checked at receipt (encoding, size, step, pixel limit) and kept as its message,
unconverted, with its receipt time and the error that makes it unusable (if any): a camera
streams far more frames than commands come, so a frame is converted to RGB only when it is
used, once, and the conversion is reused (by the command, and by the SAM2 encoding the node
may start ahead of it). An unusable frame still becomes the newest one: a command paired
with it gets ``invalid_image`` naming the problem, never a result computed on an older frame.

A frame's age is the node clock minus its header stamp, or the time since its receipt when
the camera does not stamp it. Both clocks are injected: the node passes its ROS clock and
``time.monotonic``; the bag replay passes the bag's clock (a message's log time is when it was
received), so a command is paired in bag time with exactly the node's rule. Frames may be
sensor_msgs/Image or CompressedImage messages, from rclpy or from rosbags
(:mod:`.images`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..core.limits import CheckedImage
from . import images

NANOSECONDS = 1_000_000_000


class Frame:
    """One received image: its message, its place in the stream, and why it is unusable."""

    def __init__(self, msg: Any, seq: int, max_pixels: int, error: str, received: float) -> None:
        self.msg = msg  # a sensor_msgs/Image or CompressedImage (rclpy's or rosbags')
        self.seq = seq
        self.received = received  # the slot's monotonic clock, in seconds
        self.max_pixels = max_pixels  # what it was checked against
        self.error = error  # "" when usable
        # Whether SAM2's encoding of this frame was started (by a command, or ahead of one):
        # written and read by the inference worker only, like the conversion.
        self.encoding_started = False
        self._image: CheckedImage | None = None

    @property
    def frame_id(self) -> str:
        return self.msg.header.frame_id

    @property
    def key(self) -> str:
        """Names this frame for the pipeline's encoding cache (unique within the node)."""
        stamp = self.msg.header.stamp
        return f"{self.frame_id}@{stamp.sec}.{stamp.nanosec:09d}#{self.seq}"

    def image(self) -> CheckedImage:
        """The RGB pixels, converted on first use and then reused. Only the inference worker
        calls this (commands and encoding ahead both run there), so it needs no lock. Raises
        ValueError for a frame whose ``error`` is set."""
        if self.error:
            raise ValueError(self.error)
        if self._image is None:  # checked at receipt: converted, not checked again
            pixels = images.checked_frame_to_rgb(self.msg)
            self._image = CheckedImage(pixels, self.max_pixels)
        return self._image


class FrameSlot:
    """The newest frame, and a condition to wait for a fresh one on."""

    def __init__(
        self, clock_ns: Callable[[], int], monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock_ns = clock_ns  # the node clock (ROS time: simulated under use_sim_time)
        self._monotonic = monotonic  # receipt times and the age of unstamped frames
        self._frame: Frame | None = None
        self._seq = 0
        self._changed = threading.Condition()

    def put(self, msg: Any, max_pixels: int) -> Frame:
        """Keep ``msg`` as the newest frame, checked against ``max_pixels`` (0: no limit)."""
        try:
            images.check_frame(msg, max_pixels)
            error = ""
        except images.ImageError as exc:
            error = str(exc)
        received = self._monotonic()
        with self._changed:
            self._seq += 1
            self._frame = Frame(msg, self._seq, max_pixels, error, received)
            self._changed.notify_all()
            return self._frame

    def newest(self) -> Frame | None:
        with self._changed:
            return self._frame

    def clear(self) -> None:
        """Forget the newest frame (the image subscription is gone) and wake the waiters."""
        with self._changed:
            self._frame = None
            self._changed.notify_all()

    def age(self, frame: Frame) -> float:
        """Seconds since ``frame`` was taken (since it arrived, when it has no stamp)."""
        stamp = frame.msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return self._monotonic() - frame.received
        return (self._clock_ns() - (stamp.sec * NANOSECONDS + stamp.nanosec)) / NANOSECONDS

    def usable(self, max_age_s: float) -> Frame | None:
        """The newest frame when it is at most ``max_age_s`` old (usable or not: its error
        is the command's answer)."""
        frame = self.newest()
        return frame if frame is not None and self.age(frame) <= max_age_s else None

    def why_none_usable(self, topic: str, max_age_s: float, waited_s: float) -> str:
        """Why a command waited ``waited_s`` for a usable frame in vain (its no_image error)."""
        frame = self.newest()
        waited = f"within command_wait_s={waited_s}"
        if frame is None:
            return f"no image received on {topic} {waited}"
        return (
            f"newest image is stale: {self.age(frame):.3f} s old > "
            f"max_image_age_s={max_age_s} (no fresh image {waited})"
        )

    def wait_usable(
        self, max_age_s: float, deadline: float, keep_waiting: Callable[[], bool]
    ) -> Frame | None:
        """:meth:`usable`, waiting until ``deadline`` (``time.perf_counter()``) for a fresh
        frame while ``keep_waiting()`` holds."""
        while True:
            frame = self.usable(max_age_s)
            if frame is not None or not keep_waiting():
                return frame
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            with self._changed:
                # Bounded: keep_waiting() can turn false without a notification (SIGINT).
                self._changed.wait(timeout=min(remaining, 0.05))
