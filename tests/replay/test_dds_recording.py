"""A bag recorded from a real DDS stream, replayed: the same pairing as the live node.

Three processes: a publisher (frames and commands, tests/support/stream_publisher.py), the
real node (taught tiny policy), and this test, which records the stream the way `ros2 bag
record` does (rclpy subscriptions taking the serialized messages, written with their receipt
time through rosbags; `ros2 bag` itself is not installable here) and collects the node's
results. The recorded bag is then replayed, and every command must get the same frame, status,
rationale and boxes as the live node gave it.

Each step waits until the node and the recorder both hold the frame before the command is
sent (topics are not ordered with each other), so both see the same stream. The node is never
busy when a command comes: with a busy worker, a live node can pair later than a replay does
(replay/timeline.py says why).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra or a ROS 2 install)")
pytest.importorskip("rosbags", reason="needs the replay extra (rosbags)")

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from support.bags import QUESTIONS
from support.nodes import node_processes

from wise_dev.node_client import node_command
from wise_perception.replay import cli

pytestmark = [pytest.mark.ros, pytest.mark.slow]

TESTS = Path(__file__).resolve().parents[1]
DOMAIN_ID = 151 + os.getpid() % 30  # test_node 1..50, vllm 51..90, node_startup 101..150
WAIT_S, MAX_AGE_S = 3.0, 10.0
TOPICS = {"/wise/image": "sensor_msgs/msg/Image", "/wise/command": "std_msgs/msg/String"}


class Recorder:
    """`ros2 bag record` in miniature: serialized messages in, written with their receipt time."""

    def __init__(self, client, path: Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        store = get_typestore(Stores.ROS2_HUMBLE)
        self.writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections = {
            topic: self.writer.add_connection(topic, msgtype, typestore=store)
            for topic, msgtype in {**TOPICS, "/wise/result": "std_msgs/msg/String"}.items()
        }
        self.counts = dict.fromkeys(self.connections, 0)
        self.changed = threading.Condition()
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, kind in (
            ("/wise/image", Image),
            ("/wise/command", String),
            ("/wise/result", String),
        ):
            client.node.create_subscription(
                kind, topic, lambda raw, t=topic: self._write(t, raw), reliable, raw=True
            )

    def _write(self, topic: str, raw: bytes) -> None:
        received = time.time_ns()  # the node's clock is the system clock (no sim time)
        with self.changed:
            if self.writer is not None:
                self.writer.write(self.connections[topic], received, raw)
                self.counts[topic] += 1
                self.changed.notify_all()

    def wait_for(self, topic: str, count: int, timeout: float = 30.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.counts[topic] >= count, timeout), (
                f"the recorder got {self.counts[topic]} of {count} on {topic}"
            )

    def close(self) -> None:
        with self.changed:
            writer, self.writer = self.writer, None
        writer.close()


class Publisher:
    """The publisher process, driven line by line."""

    def __init__(self) -> None:
        env = {
            **os.environ,
            "ROS_DOMAIN_ID": str(DOMAIN_ID),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "support.stream_publisher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def do(self, **order) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == f"done {order['op']}", answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)


def test_a_recorded_stream_replays_with_the_live_nodes_pairing(
    taught_policy_dir, tiny_sam2_dir, tmp_path
):
    params = {
        "policy_model": str(taught_policy_dir),
        "segmenter_model": str(tiny_sam2_dir),
        "device": "cpu",
        "dtype": "float32",
        "max_new_tokens": 96,
        "command_wait_s": WAIT_S,
        "max_image_age_s": MAX_AGE_S,
        "diagnostics_period_s": 0.1,
    }
    bag, logs, live = tmp_path / "robot_bag", tmp_path / "logs", {}
    logs.mkdir()
    publisher = Publisher()
    with node_processes(
        {"/wise": node_command(params, "/wise")}, DOMAIN_ID, logs, active_timeout=120.0
    ) as (clients, _):
        client = clients["/wise"]
        recorder = Recorder(client, bag)
        try:
            publisher.do(op="wait_for_subscribers", count=2)  # the node and the recorder
            sent = {"/wise/image": 0, "/wise/command": 0}

            def frame(frame_id: str, **extra) -> None:
                publisher.do(op="image", frame_id=frame_id, **extra)
                sent["/wise/image"] += 1
                client.wait_for_frame(frame_id)
                recorder.wait_for("/wise/image", sent["/wise/image"])

            def command(text: str, command_id=None, *, answered: bool = True) -> None:
                data = (
                    text if command_id is None else json.dumps({"id": command_id, "command": text})
                )
                publisher.do(op="command", data=data)
                sent["/wise/command"] += 1
                recorder.wait_for("/wise/command", sent["/wise/command"])
                if answered:
                    _, result = client.next_result(timeout=60)
                    live[result["id"] if command_id is not None else result["command"]] = result

            # before any frame: the node waits for one (command_wait_s)
            command(QUESTIONS[0], "c0", answered=False)
            time.sleep(0.5)
            frame("f1", seed=1)
            _, result = client.next_result(timeout=60)
            live["c0"] = result
            command(QUESTIONS[1], "c1")
            frame("f2_yuv", seed=2, encoding="yuv422")  # unknown encoding: invalid_image
            command(QUESTIONS[2], "c2")
            frame("f3_bgr_padded", seed=3, encoding="bgr8", pad=5)
            command(QUESTIONS[3])  # plain text, no id
            command("", "c4")  # invalid_command
            frame("f4_stale", seed=4, age_s=60.0)  # stamped a minute ago
            command(QUESTIONS[0], "c5", answered=False)  # no usable frame: waits...
            time.sleep(0.5)
            frame("f5_fresh", seed=5)  # ...for this one
            _, result = client.next_result(timeout=60)
            live["c5"] = result
            time.sleep(0.5)  # the node's last results reach the recorder
        finally:
            recorder.close()
            publisher.close()

    assert {r["status"] for r in live.values()} == {"ok", "invalid_image", "invalid_command"}
    out = tmp_path / "replay"
    models = ["--policy", f"taught={taught_policy_dir}", "--segmenter", str(tiny_sam2_dir)]
    models += ["--device", "cpu", "--dtype", "float32", "--max-new-tokens", "96"]
    pairing = ["--max-image-age-s", str(MAX_AGE_S), "--command-wait-s", str(WAIT_S)]
    code = cli.main([str(bag), *models, *pairing, "--out", str(out), "--quiet"])
    assert code == 0
    replayed = {}
    for line in (out / "taught" / "results.jsonl").read_text().splitlines():
        result = json.loads(line)["result"]
        replayed[result["id"] if result["id"] is not None else result["command"]] = result
    assert sorted(replayed, key=str) == sorted(live, key=str)  # one result per command
    expected = {
        "c0": ("ok", "f1"),
        "c1": ("ok", "f1"),
        "c2": ("invalid_image", "f2_yuv"),
        QUESTIONS[3]: ("ok", "f3_bgr_padded"),
        "c4": ("invalid_command", ""),
        "c5": ("ok", "f5_fresh"),
    }
    for key, (status, frame_id) in expected.items():
        for side in (live, replayed):
            assert (side[key]["status"], side[key]["frame_id"]) == (status, frame_id), side[key]
        ours, theirs = replayed[key], live[key]
        if frame_id:  # the same frame: its header, as the node stamped its outputs
            assert ours["stamp"] == theirs["stamp"]
        for field in ("error", "rationale", "reasoning_tokens", "image_size"):
            assert ours[field] == theirs[field], field
        assert [o["box"] for o in ours["objects"]] == [o["box"] for o in theirs["objects"]]
    assert replayed["c0"]["node"]["image_wait_ms"] > 0  # it waited in bag time, as live

    # the node's own results, recorded in the bag beside its inputs, say the same
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    with Reader(bag) as reader:
        recorded = [
            json.loads(store.deserialize_cdr(raw, connection.msgtype).data)
            for connection, _, raw in reader.messages()
            if connection.topic == "/wise/result"
        ]
    assert sorted((r["status"], r["frame_id"]) for r in recorded) == sorted(
        (r["status"], r["frame_id"]) for r in replayed.values()
    )
