"""Reason once, then track, in the node: real node processes driven over real DDS.

Two node processes (taught tiny policy, tiny SAM2 with video memory, random weights) receive
a 15 Hz camera stream from this process: ``/wise_track`` never loses the object (threshold 0),
``/wise_lost`` loses it after two frames (threshold 1: no score reaches it) and re-grounds.
Tests run in file order on ``/wise_track``; each starts its own track.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra or a ROS 2 install)")

from support.nodes import node_processes

from wise_dev.moving_shapes import make_stream
from wise_dev.node_client import NodeClient, node_command

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = 51 + os.getpid() % 50  # apart from test_node.py's domains
FPS = 15.0
FRAMES = make_stream(4, length=30, height=120, width=160).frames


def _params(policy: Path, sam2: Path, **extra: object) -> dict[str, object]:
    return {
        "policy_model": str(policy),
        "segmenter_model": str(sam2),
        "device": "cpu",
        "dtype": "float32",
        "max_new_tokens": 96,
        "max_image_age_s": 10.0,
        "image_reliability": "reliable",
        "diagnostics_period_s": 0.2,
        "warmup": False,
        **extra,
    }


@pytest.fixture(scope="module")
def nodes(taught_policy_dir, tiny_sam2_video_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("tracking_node_logs")
    commands = {
        "/wise_track": node_command(
            _params(taught_policy_dir, tiny_sam2_video_dir, track_score_threshold=0.0),
            "/wise_track",
        ),
        "/wise_lost": node_command(
            _params(
                taught_policy_dir,
                tiny_sam2_video_dir,
                track_score_threshold=1.0,
                track_lost_after=2,
                reground_on_loss=True,
            ),
            "/wise_lost",
        ),
    }
    with node_processes(commands, DOMAIN_ID, logs, active_timeout=120.0) as (clients, procs):
        yield clients, procs


class Camera:
    """Publishes the stream at ``FPS`` on a thread; remembers each frame's stamp."""

    def __init__(self, client: NodeClient) -> None:
        self.client = client
        self.stamps: set[tuple[int, int]] = set()
        # While set, sent instead of the stream's frames (so the node's newest frame is surely it)
        self.override: np.ndarray | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = 0
        while not self._stop.wait(1.0 / FPS):
            stamp = self.client.stamp_now()
            pixels = self.override
            self.client.publish_image(
                pixels if pixels is not None else FRAMES[index % len(FRAMES)], "cam", stamp
            )
            self.stamps.add((stamp.sec, stamp.nanosec))
            index += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def camera(nodes, request) -> Iterator[tuple[NodeClient, Camera]]:
    clients, procs = nodes
    ns = getattr(request, "param", "/wise_track")
    client = clients[ns]
    cam = Camera(client)
    client.wait_for_frame("cam")
    client.drain()
    yield client, cam
    cam.close()
    assert procs[ns].poll() is None, "the node process died"


def _result(client: NodeClient, ident: object, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, result = client.next_result(timeout=max(deadline - time.monotonic(), 0.01))
        if result.get("id") == ident:
            return result


def _tracks(client: NodeClient, count: int, ident: object, timeout: float = 60.0) -> list[dict]:
    """The next ``count`` track messages of command ``ident`` (others are skipped)."""
    found, deadline = [], time.monotonic() + timeout
    while len(found) < count:
        message = client.tracks.get(timeout=max(deadline - time.monotonic(), 0.01))
        if message["id"] == ident:
            found.append(message)
    return found


def _stamp(message: dict) -> tuple[int, int]:
    return (message["stamp"]["sec"], message["stamp"]["nanosec"])


def test_a_tracked_command_gets_one_result_then_a_mask_per_processed_frame(camera) -> None:
    client, cam = camera
    client.command("the red square", "t1", track=True)
    result = _result(client, "t1")
    assert result["status"] == "ok" and result["track"] == {"state": "tracking", "error": ""}
    tracks = _tracks(client, 6, "t1")
    request_id = result["node"]["request_id"]
    assert all(m["request_id"] == request_id and m["state"] == "tracking" for m in tracks)
    assert [m["frame_index"] for m in tracks] == list(range(1, 7))  # one per processed frame
    stamps = [_stamp(m) for m in tracks]
    assert all(s in cam.stamps for s in stamps) and stamps == sorted(set(stamps))
    assert stamps[0] > _stamp(result)  # newer frames than the answer's
    masks = {}
    while len(masks) < len(stamps) or not set(stamps) <= set(masks):
        mask = client.masks.get(timeout=30.0)
        masks[(mask.header.stamp.sec, mask.header.stamp.nanosec)] = mask
    for message in tracks:  # each tracked mask with its frame's header
        mask = masks[_stamp(message)]
        assert mask.header.frame_id == "cam" == message["frame_id"]
        assert (mask.width, mask.height, mask.encoding) == (160, 120, "mono8")
        pixels = np.frombuffer(bytes(mask.data), np.uint8)
        assert int((pixels == 255).sum()) == message["mask_pixels"]
    # Nothing grows: the tracker's state is the same size frame after frame, and frames that
    # came faster than tracking ran were skipped, never queued.
    first = json.loads(client.wait_for_diagnostics(_tracking("t1", 8), "8 tracked")["tracking"])
    later = json.loads(client.wait_for_diagnostics(_tracking("t1", 20), "20 tracked")["tracking"])
    assert first["state_bytes"] == later["state_bytes"] > 0
    assert later["rate_hz"] > 0 and later["skipped_frames"] >= 0
    assert json.loads(client.wait_for_diagnostics(lambda v: True, "any")["queue_depth"]) == 0
    with pytest.raises(queue.Empty):  # one result per command
        _result(client, "t1", timeout=1.0)


def _tracking(ident: object, frames: int):
    def reached(values: dict[str, str]) -> bool:
        status = json.loads(values.get("tracking", "{}"))
        return status.get("id") == ident and status.get("tracked_frames", 0) >= frames

    return reached


def test_a_new_command_preempts_the_track(camera) -> None:
    client, _ = camera
    client.command("the red square", "p1", track=True)
    assert _result(client, "p1")["track"]["state"] == "tracking"
    _tracks(client, 2, "p1")
    client.command("the red square", "p2", track=True)
    last = _until_state(client, "p1", "preempted")
    assert "by request" in last["error"]
    second = _result(client, "p2")
    assert second["status"] == "ok" and second["track"]["state"] == "tracking"
    assert _tracks(client, 2, "p2")[0]["state"] == "tracking"


def _until_state(client: NodeClient, ident: object, state: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        (message,) = _tracks(client, 1, ident, timeout=max(deadline - time.monotonic(), 0.01))
        if message["state"] == state:
            return message
        assert message["state"] == "tracking", message


def test_stop_ends_the_track(camera) -> None:
    client, _ = camera
    client.command("the red square", "s0", track=True)
    _result(client, "s0")
    _tracks(client, 2, "s0")
    client.stop("s1")
    _until_state(client, "s0", "stopped")
    stopped = _result(client, "s1")
    assert (stopped["status"], stopped["error"]) == ("stopped", "")
    time.sleep(1.0)
    assert all(m["id"] != "s0" for m in _drain(client.tracks)), "tracking went on after stop"
    client.stop("s2")
    assert _result(client, "s2")["error"] == "no track was running"


def _drain(q) -> list:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


def test_a_command_that_does_not_ask_is_not_tracked(camera) -> None:
    client, _ = camera
    client.command("the red square", "n1")  # track_default: false
    result = _result(client, "n1")
    assert result["status"] == "ok" and "track" not in result
    time.sleep(1.0)
    assert not _drain(client.tracks)


def test_the_node_survives_bad_frames_mid_track(camera) -> None:
    client, cam = camera
    client.command("the red square", "b1", track=True)
    _result(client, "b1")
    _tracks(client, 2, "b1")
    # Frames of another size until the tracker has refused one: sent once, it could be skipped
    # for a newer good frame (newest wins) and never reach the tracker.
    cam.override = np.zeros((60, 80, 3), np.uint8)
    bad = client.publish_image(FRAMES[0], "cam")
    bad.step += 1  # a step that does not match the width: invalid at receipt
    client.publish_raw(bad)
    client.wait_for_diagnostics(
        lambda v: json.loads(v.get("tracking", "{}")).get("refused_frames", 0) >= 1,
        "a refused frame",
    )
    cam.override = None
    after = _tracks(client, 3, "b1")
    assert all(m["state"] == "tracking" for m in after)


@pytest.mark.parametrize("camera", ["/wise_lost"], indirect=True)
def test_loss_is_reported_and_the_policy_asked_again(camera) -> None:
    client, _ = camera
    client.command("the red square", "l1", track=True)
    result = _result(client, "l1")
    assert result["status"] == "ok" and result["track"]["state"] == "tracking"
    lost = _until_state(client, "l1", "lost")
    assert lost["score"] < 1.0 and lost["tracked_frames"] == 2
    regrounded = _tracks(client, 1, "l1")[0]
    assert regrounded["state"] == "tracking" and regrounded["regrounded"] == 1
    with pytest.raises(queue.Empty):  # still one result for the command
        _result(client, "l1", timeout=1.0)
