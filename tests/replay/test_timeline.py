"""The node's command path in bag time (replay/timeline.py), on rosbags' messages: the node's
own frame slot and command parser, decisions at bag times, no wall clock anywhere.

The same rules on a live node over DDS are compared with a replay of its recorded stream in
test_dds_recording.py; here each rule is pinned down with exact bag times.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("rosbags", reason="needs the replay extra (rosbags)")

from support.bags import NS, T0, BagBuilder, rgb

from wise_perception.replay.settings import ReplaySettings
from wise_perception.replay.timeline import NodeTimeline
from wise_perception.result import Status

STORE = BagBuilder()  # rosbags' message classes


def frame(frame_id: str, at_s: float | None, *, encoding: str = "rgb8", pixels=None):
    """A rosbags Image stamped at ``at_s`` after T0 (None: unstamped)."""
    builder = BagBuilder()
    stamp = None if at_s is None else T0 + round(at_s * NS)
    builder.image(
        0, frame_id, rgb(0) if pixels is None else pixels, stamp_ns=stamp, encoding=encoding
    )
    return builder.messages[0][3]


def at(seconds: float) -> int:
    return T0 + round(seconds * NS)


def run(timeline: NodeTimeline, events) -> dict[int, object]:
    """Feed (at_s, "frame"/"command", payload) events; the decisions by command index."""
    decisions = []
    for at_s, kind, payload in events:
        if kind == "frame":
            decisions += timeline.frame(at(at_s), payload)
        else:
            decisions += timeline.command(at(at_s), payload)
    decisions += timeline.finish()
    by_index = {d.job.index: d for d in decisions}
    assert len(by_index) == len(decisions), "one decision per command"
    return by_index


def test_a_command_takes_the_newest_frame_no_older_than_max_image_age():
    timeline = NodeTimeline(ReplaySettings(max_image_age_s=1.0))
    decided = run(
        timeline,
        [
            (0.0, "frame", frame("a", 0.0)),
            (0.4, "frame", frame("b", 0.4)),
            (0.9, "command", "the cup"),  # b is 0.5 s old
            (0.9, "frame", frame("old_stamp", -5.0)),  # received now, taken 5 s ago
            (1.0, "command", '{"id": 7, "command": "the mug"}'),
        ],
    )
    first, second = decided[1], decided[2]
    assert first.status is None and first.frame.msg.header.frame_id == "b"
    assert first.at_ns == at(0.9) and first.image_age_s == pytest.approx(0.5)
    assert first.image_wait_ns is None  # paired on receipt
    # the newest frame is stale by its stamp: the command waits command_wait_s, then no_image
    assert second.status is Status.NO_IMAGE and second.job.command.id == 7
    assert second.at_ns == at(1.0 + 2.0) and second.image_wait_ns == 2 * NS
    assert second.error == (
        "newest image is stale: 8.000 s old > max_image_age_s=1.0 "
        "(no fresh image within command_wait_s=2.0)"
    )


def test_a_waiting_command_takes_the_first_usable_frame_that_arrives_in_time():
    timeline = NodeTimeline(ReplaySettings(command_wait_s=2.0))
    decided = run(
        timeline,
        [
            (0.0, "command", "before any image"),
            (0.5, "frame", frame("stale", -10.0)),  # arrives, but too old: keeps waiting
            (2.0, "frame", frame("in_time", 2.0)),  # exactly at the deadline: still in time
            (3.0, "command", "too late for any"),
            (10.0, "frame", frame("long_after", 10.0)),
        ],
    )
    assert decided[1].frame.msg.header.frame_id == "in_time"
    assert decided[1].at_ns == at(2.0) and decided[1].image_wait_ns == 2 * NS
    late = decided[2]  # in_time is 1 s old at 3.0: paired on receipt
    assert late.status is None and late.frame.msg.header.frame_id == "in_time"


def test_no_image_at_all_and_the_end_of_the_bag():
    timeline = NodeTimeline(ReplaySettings(command_wait_s=1.5), image_topic="/cam/image")
    decided = run(timeline, [(0.0, "command", "nothing ever comes")])
    only = decided[1]
    assert only.status is Status.NO_IMAGE and only.at_ns == at(1.5)
    assert only.error == "no image received on /cam/image within command_wait_s=1.5"
    assert only.frame is None


def test_an_unstamped_frame_ages_from_its_receipt_in_bag_time():
    timeline = NodeTimeline(ReplaySettings(max_image_age_s=1.0, command_wait_s=0.0))
    decided = run(
        timeline,
        [
            (5.0, "frame", frame("unstamped", None)),
            (5.75, "command", "young enough"),
            (6.5, "command", "too old"),
        ],
    )
    assert decided[1].status is None and decided[1].image_age_s == pytest.approx(0.75)
    assert decided[2].status is Status.NO_IMAGE and "1.500 s old" in decided[2].error


def test_an_invalid_newest_frame_answers_invalid_image_never_an_older_frame():
    timeline = NodeTimeline(ReplaySettings(max_image_pixels=64 * 48))
    decided = run(
        timeline,
        [
            (0.0, "frame", frame("good", 0.0)),
            (0.1, "frame", frame("depth", 0.1, encoding="32FC1")),
            (0.2, "command", "the cup"),
            (0.3, "frame", frame("huge", 0.3, pixels=rgb(1, 100, 100))),
            (0.4, "command", "the cup again"),
        ],
    )
    assert decided[1].status is Status.INVALID_IMAGE
    assert decided[1].frame.msg.header.frame_id == "depth"
    assert "unsupported image encoding '32FC1'" in decided[1].error
    assert "exceeds max_image_pixels=3072" in decided[2].error


def test_invalid_commands_are_answered_at_once_and_still_counted():
    timeline = NodeTimeline(ReplaySettings(max_command_chars=20))
    decided = run(
        timeline,
        [
            (0.0, "frame", frame("a", 0.0)),
            (0.1, "command", ""),
            (0.2, "command", '{"id": "x", "command": 3}'),
            (0.3, "command", "x" * 21),
            (0.4, "command", "fine"),
        ],
    )
    assert [decided[i].status for i in (1, 2, 3)] == [Status.INVALID_COMMAND] * 3
    assert decided[2].job.command.id == "x" and decided[2].at_ns == at(0.2)
    assert "limit is 20" in decided[3].error
    assert decided[4].status is None and decided[4].job.index == 4  # the node's request_id


def test_commands_queue_behind_a_waiting_one_and_a_full_queue_refuses():
    settings = ReplaySettings(queue_size=2, command_wait_s=1.0)
    decided = run(
        NodeTimeline(settings),
        [
            (0.0, "command", "waits"),  # the worker waits for a frame
            (0.1, "command", "queued 1"),
            (0.2, "command", "queued 2"),
            (0.3, "command", "refused"),
            (0.5, "frame", frame("f", 0.5)),
        ],
    )
    assert decided[4].status is Status.QUEUE_FULL and decided[4].at_ns == at(0.3)
    assert decided[4].error == "rejected: 2 command(s) already waiting (queue_size=2)"
    for index in (1, 2, 3):  # the frame that ends the wait serves the queue too
        assert decided[index].frame.msg.header.frame_id == "f" and decided[index].at_ns == at(0.5)
    assert decided[2].queue_wait_ns == round(0.4 * NS)  # waited behind the first


def test_queued_commands_time_out_at_their_own_deadlines():
    decided = run(
        NodeTimeline(ReplaySettings(command_wait_s=1.0)),
        [(0.0, "command", "first"), (0.6, "command", "second")],
    )
    assert decided[1].at_ns == at(1.0) and decided[2].at_ns == at(1.6)
    assert decided[2].queue_wait_ns == round(0.4 * NS) and decided[2].image_wait_ns == round(
        0.6 * NS
    )


def test_the_timeline_never_reads_the_wall_clock(monkeypatch):
    """Results cannot depend on how fast a machine replays: no clock but the bag's."""

    def forbidden() -> float:
        raise AssertionError("the wall clock was read")

    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, forbidden)
    decided = run(
        NodeTimeline(ReplaySettings()),
        [
            (0.0, "command", "waits"),
            (0.5, "frame", frame("unstamped", None)),
            (0.7, "command", "paired"),
            (9.0, "command", "times out"),
        ],
    )
    assert [d.status for d in decided.values()] == [None, None, Status.NO_IMAGE]
