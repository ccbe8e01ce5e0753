"""Drives node processes over DDS, for the node tests and the node benchmark: the command
line of a node process (the real node or the stub one), starting and stopping it on a private
domain, and a client that publishes images and commands and collects results.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from wise_perception.node import messages as rm


def node_command(
    params: dict[str, Any],
    namespace: str = "/wise",
    *,
    stub: bool = False,
    load_delay_s: float = 0.0,
) -> list[str]:
    """Command line of a node process (the real node, or the stub-pipeline node)."""
    module = ["-m", "wise_perception.node"]
    if stub:
        module = ["-m", "wise_dev.stub_node"]
        if load_delay_s:
            module += ["--load-delay-s", str(load_delay_s)]
    args = [sys.executable, *module, "--ros-args", "-r", f"__ns:={namespace}"]
    for key, value in params.items():
        text = json.dumps(value) if isinstance(value, bool | int | float) else str(value)
        args += ["-p", f"{key}:={text}"]
    return args


class NodeClient:
    """Drives a node process over DDS: publishes images and commands, collects results."""

    def __init__(self, namespace: str = "/wise", node_name: str = "wise_perception") -> None:
        self.ns = namespace.rstrip("/")
        self.node = Node("wise_test_client")
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, f"{self.ns}/image", reliable)
        self.command_pub = self.node.create_publisher(String, f"{self.ns}/command", reliable)
        self.results: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.masks: queue.Queue[Image] = queue.Queue()
        self.rationales: queue.Queue[str] = queue.Queue()
        self.tracks: queue.Queue[dict[str, Any]] = queue.Queue()  # the track topic's JSON
        self.node.create_subscription(String, f"{self.ns}/result", self._on_result, reliable)
        self.node.create_subscription(Image, f"{self.ns}/mask", self.masks.put, reliable)
        self.node.create_subscription(
            String, f"{self.ns}/rationale", lambda m: self.rationales.put(m.data), reliable
        )
        self.node.create_subscription(
            String, f"{self.ns}/track", lambda m: self.tracks.put(json.loads(m.data)), reliable
        )
        lifecycle = f"{self.ns}/{node_name}"
        self._node_fqn = lifecycle
        self._diagnostics: dict[str, str] = {}  # the node's latest /diagnostics values
        self._diagnostics_cv = threading.Condition()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.change_state = self.node.create_client(ChangeState, f"{lifecycle}/change_state")
        self.get_state = self.node.create_client(GetState, f"{lifecycle}/get_state")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_result(self, msg: String) -> None:
        self.results.put((time.perf_counter(), json.loads(msg.data)))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id != self._node_fqn:
                continue
            with self._diagnostics_cv:
                self._diagnostics = {kv.key: kv.value for kv in status.values}
                self._diagnostics_cv.notify_all()

    def wait_for_diagnostics(
        self, condition: Callable[[dict[str, str]], bool], what: str, timeout: float = 30.0
    ) -> dict[str, str]:
        """The node's first /diagnostics values (key -> text, JSON for non-strings) that meet
        ``condition``, waiting up to ``timeout`` seconds; ``what`` names it in the TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._diagnostics_cv:
            while not condition(self._diagnostics):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self._node_fqn} did not report {what} within {timeout} s "
                        f"(last: {self._diagnostics})"
                    )
                self._diagnostics_cv.wait(timeout=min(remaining, 0.1))
            return dict(self._diagnostics)

    def wait_for_frame(self, frame_id: str, timeout: float = 30.0) -> None:
        """Until the node's diagnostics report ``frame_id`` as its newest image. Images and
        commands travel on different topics, so a command published right after an image can
        reach the node before it (under load, by far): wait for this before such a command."""
        self.wait_for_diagnostics(
            lambda values: values.get("newest_frame") == frame_id, f"frame {frame_id!r}", timeout
        )

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()

    # -- lifecycle
    def state(self, timeout: float = 5.0) -> str:
        if not self.get_state.wait_for_service(timeout_sec=timeout):
            return "unreachable"
        future = self.get_state.call_async(GetState.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.result().current_state.label if future.done() else "unreachable"

    def wait_for_state(
        self, label: str, timeout: float = 60.0, proc: subprocess.Popen | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"node process exited with {proc.returncode}")
            matched = self.command_pub.get_subscription_count() > 0
            if label == "active":  # the image subscription only exists while active
                matched = matched and self.image_pub.get_subscription_count() > 0
            if matched and self.state(timeout=2.0) == label:
                return
            time.sleep(0.1)
        raise TimeoutError(f"node did not reach state {label!r} within {timeout} s")

    def transition(self, transition_id: int, timeout: float = 60.0) -> bool:
        request = ChangeState.Request()
        request.transition = Transition(id=transition_id)
        future = self.change_state.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return bool(future.done() and future.result().success)

    # -- traffic
    def stamp_now(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def publish_image(
        self, rgb: np.ndarray, frame_id: str = "camera", stamp: Any = None, encoding: str = "rgb8"
    ) -> Image:
        header = rm.header_of(stamp if stamp is not None else self.stamp_now(), frame_id)
        pixels = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
        msg = rm.numpy_to_image(np.ascontiguousarray(pixels), encoding, header)
        self.image_pub.publish(msg)
        return msg

    def publish_raw(self, msg: Image) -> None:
        self.image_pub.publish(msg)

    def command(
        self, text: str, command_id: str | int | None = None, *, track: bool | None = None
    ) -> float:
        """Publish ``text``, as ``{"id": ..., "command": ..., "track": ...}`` JSON when an id
        or ``track`` is given."""
        fields: dict[str, Any] = {"command": text}
        if command_id is not None:
            fields["id"] = command_id
        if track is not None:
            fields["track"] = track
        data = json.dumps(fields) if len(fields) > 1 else text
        sent = time.perf_counter()
        self.command_pub.publish(String(data=data))
        return sent

    def stop(self, command_id: str | int | None = None) -> float:
        """Publish ``{"stop": true}``: the node ends its running track."""
        fields: dict[str, Any] = {"stop": True}
        if command_id is not None:
            fields["id"] = command_id
        sent = time.perf_counter()
        self.command_pub.publish(String(data=json.dumps(fields)))
        return sent

    def next_result(self, timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
        return self.results.get(timeout=timeout)

    def drain(self) -> None:
        for q in (self.results, self.masks, self.rationales, self.tracks):
            while not q.empty():
                q.get_nowait()


def start_node(
    cmd: Sequence[str], domain_id: int, log_path: Path | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with the process
    return subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(2)  # SIGINT: the node frees its models and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
