"""The node's rules for encoding ahead: one in flight, each frame once, usable frames only.

The pipeline's side (encode_ahead, then segment on the same frame: one encoding) is tested with
the real tiny models in test_pipeline.py, and the whole path over DDS in test_node.py; here a
pipeline whose encodings end when the test says, to see the rules themselves.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 message packages (ros-wheels extra)")

from builtin_interfaces.msg import Time

from wise_perception.inputs.frame_slot import FrameSlot
from wise_perception.node import messages as rm
from wise_perception.node.encode_ahead import EncodeAhead

pytestmark = pytest.mark.ros

RGB = np.zeros((4, 6, 3), np.uint8)


class HeldEncodings:
    """Records what it is asked to encode; each encoding ends when the test ends it."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.futures: list[Future[None]] = []

    def encode_ahead(self, image, frame_key) -> Future[None]:
        self.started.append(frame_key)
        self.futures.append(Future())
        return self.futures[-1]


def frame(slot: FrameSlot, frame_id: str, encoding: str = "rgb8"):
    msg = rm.numpy_to_image(RGB, "rgb8", rm.header_of(Time(sec=1), frame_id))
    msg.encoding = encoding
    return slot.put(msg, 0)


def test_one_encoding_in_flight_each_frame_once_and_its_end_wakes_the_worker():
    slot, pipeline, wakes = FrameSlot(lambda: 0), HeldEncodings(), []
    ahead = EncodeAhead(wake=lambda: wakes.append(1))
    first = frame(slot, "a")
    assert ahead.wants(first)
    ahead.start(first, pipeline)
    second = frame(slot, "b")
    assert not ahead.wants(second)  # one in flight: bounded work
    pipeline.futures[0].set_result(None)
    assert ahead.encoded == "a" and wakes == [1]  # its end: look again
    assert not ahead.wants(first)  # each frame once
    assert ahead.wants(second)
    second.encoding_started = True  # a command encodes it itself
    assert not ahead.wants(second)
    assert not ahead.wants(frame(slot, "depth", encoding="32FC1"))  # unusable: skipped
    assert pipeline.started == [first.key]


def test_encodings_of_released_models_are_forgotten():
    slot, pipeline = FrameSlot(lambda: 0), HeldEncodings()
    ahead = EncodeAhead(wake=lambda: None)
    first = frame(slot, "a")
    ahead.start(first, pipeline)
    ahead.forget()  # deactivated: the models and their encodings are gone
    pipeline.futures[0].set_result(None)
    assert ahead.encoded == "" and ahead.wants(frame(slot, "b"))
