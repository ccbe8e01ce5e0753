"""The newest frame: checked at receipt, converted once, aged against the node clock (here on
rclpy's messages; tests/replay/test_pairing.py runs the same slot on rosbags' in bag time)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 message packages (ros-wheels extra)")

from builtin_interfaces.msg import Time

from wise_perception.inputs import images
from wise_perception.inputs.frame_slot import FrameSlot
from wise_perception.node import messages as rm

pytestmark = pytest.mark.ros

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
NOW_NS = 100 * 1_000_000_000


def image(frame_id: str, sec: int = 0, encoding: str = "rgb8"):
    msg = rm.numpy_to_image(RGB, "rgb8", rm.header_of(Time(sec=sec), frame_id))
    msg.encoding = encoding
    return msg


def test_a_frame_is_checked_on_receipt_and_converted_once(monkeypatch):
    slot = FrameSlot(lambda: NOW_NS)
    frame = slot.put(image("cam", sec=99), max_pixels=35)
    assert frame.error == "" and slot.newest() is frame
    conversions = []
    convert = images.checked_frame_to_rgb
    monkeypatch.setattr(
        images, "checked_frame_to_rgb", lambda msg: conversions.append(1) or convert(msg)
    )
    first = frame.image()
    assert frame.image() is first and len(conversions) == 1
    np.testing.assert_array_equal(first.pixels, RGB)
    assert first.max_pixels == 35  # what it was checked against travels with it
    assert frame.key.startswith("cam@99.000000000#")


def test_an_invalid_frame_is_the_newest_and_says_why():
    slot = FrameSlot(lambda: NOW_NS)
    slot.put(image("good", sec=99), 0)
    bad = slot.put(image("depth", sec=99, encoding="32FC1"), 0)
    assert slot.newest() is bad and "unsupported image encoding '32FC1'" in bad.error
    with pytest.raises(ValueError, match="32FC1"):
        bad.image()
    too_big = slot.put(image("big", sec=99), max_pixels=30)
    assert "exceeds max_image_pixels=30" in too_big.error


def test_age_is_the_node_clock_minus_the_stamp_or_the_time_since_receipt():
    slot = FrameSlot(lambda: NOW_NS)
    stamped = slot.put(image("cam", sec=97), 0)
    assert slot.age(stamped) == pytest.approx(3.0)
    assert slot.usable(max_age_s=5.0) is stamped and slot.usable(max_age_s=1.0) is None
    unstamped = slot.put(image("cam"), 0)
    assert 0.0 <= slot.age(unstamped) < 5.0
    # the receipt clock is injected too: an unstamped frame ages by it alone
    receipt = [10.0]
    slot = FrameSlot(lambda: NOW_NS, monotonic=lambda: receipt[0])
    unstamped = slot.put(image("cam"), 0)
    receipt[0] = 10.25
    assert slot.age(unstamped) == 0.25 and slot.usable(max_age_s=0.25) is unstamped
    slot.clear()
    assert slot.newest() is None


def test_waiting_ends_with_a_fresh_frame_or_the_deadline():
    slot = FrameSlot(lambda: NOW_NS)
    assert slot.wait_usable(1.0, time.perf_counter() + 0.1, lambda: True) is None
    assert slot.wait_usable(1.0, time.perf_counter() + 10, lambda: False) is None  # not waiting
    # a frame that comes while a command waits wakes it (whenever it comes)
    arrival = threading.Timer(0.05, slot.put, args=(image("cam", sec=100), 0))
    arrival.start()
    fresh = slot.wait_usable(1.0, time.perf_counter() + 10, lambda: True)
    arrival.join()
    assert fresh is not None and fresh is slot.newest() and fresh.frame_id == "cam"
