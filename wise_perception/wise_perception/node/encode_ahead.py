"""Encoding ahead: the node starts SAM2 on the newest frame while it has no command to serve.

A command on a frame already encoded then pays nothing for the encoder: the pipeline's
encoding cache finds the encoding done, or in flight. The node's inference worker, when idle,
asks :meth:`EncodeAhead.wants` about the newest usable frame, and starts it with
:meth:`EncodeAhead.start`. The rules:

* at most one encoding ahead in flight (bounded work); its end wakes the worker to look again;
* each frame once: not a frame whose encoding was already started, ahead or by a command;
* usable frames only (valid, and young enough for a command to be paired with);
* only the idle worker starts one, so never while a command is served, and nothing waits for
  it: a command that comes finds its frame's encoding done, in flight, or not started.

The price: SAM2 encodes on one thread, so a command on a newer frame than the one in flight
starts its own encoding when that one ends. Hence the node's ``encode_ahead: auto``, on only
where SAM2 runs on CUDA; on a CPU, the encoding would take the cores that inference needs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..inputs.frame_slot import Frame
from .models import NodePipeline


class EncodeAhead:
    """Which frame was encoded ahead, which is in flight, and whether to start another."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake  # asks the idle worker to look again
        self._in_flight: Future[Any] | None = None
        self.encoded = ""  # frame_id of the last frame encoded ahead (diagnostics)

    def wants(self, frame: Frame | None) -> bool:
        """Whether to start encoding ``frame`` (the newest usable one) now."""
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.done():
            return False
        return frame is not None and not frame.error and not frame.encoding_started

    def start(self, frame: Frame, pipeline: NodePipeline) -> None:
        """Start ``frame``'s encoding without waiting for it (converting the frame, once)."""
        frame.encoding_started = True
        in_flight = pipeline.encode_ahead(frame.image(), frame.key)
        self._in_flight = in_flight
        in_flight.add_done_callback(lambda done: self._finished(frame, done))

    def forget(self) -> None:
        """The models are gone, and their encodings with them."""
        self._in_flight, self.encoded = None, ""

    def _finished(self, frame: Frame, done: Future[Any]) -> None:
        # On SAM2's thread. An encoding of models since released is not reported.
        if done is self._in_flight and not done.cancelled() and done.exception() is None:
            self.encoded = frame.frame_id
        self._wake()
