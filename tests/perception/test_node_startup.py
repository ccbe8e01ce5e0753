"""The node while its models load, on SIGINT, and with a camera whose QoS it cannot match.

Each test starts its own node process (``python -m wise_dev.stub_node``) over real DDS. Its pipeline is
a stand-in: the stub of :mod:`wise_dev.stub_node`, whose "load" sleeps
``--load-delay-s`` seconds, standing in for the multi-minute load of a 7B checkpoint (which
cannot run here). Everything else (lifecycle, executor, signals, topics) is the real node.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra or a ROS 2 install)")

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from wise_dev.node_client import NodeClient, node_command, start_node, stop_node
from wise_perception.node import messages as rm

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN_ID = 101 + os.getpid() % 50  # test_node.py uses 1..100
LOAD_S = 30.0  # the stand-in load: far longer than any bound asserted below
# Generous on purpose (a loaded 2-core host): the defect was 28-32 s, the fix measures < 1 s.
PROMPT_S = 5.0


@pytest.fixture(scope="module", autouse=True)
def ros_context():
    os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    rclpy.init()
    yield
    rclpy.try_shutdown()


class Node:
    """A node process, a client and the node's /diagnostics statuses."""

    def __init__(self, tmp_path: Path, ns: str, load_delay_s: float = 0.0, **params) -> None:
        self.log = tmp_path / f"{ns.strip('/')}.log"
        base = {"diagnostics_period_s": 0.2, "command_wait_s": 0.5}
        cmd = node_command({**base, **params}, ns, stub=True, load_delay_s=load_delay_s)
        self.proc = start_node(cmd, DOMAIN_ID, self.log)
        self.client = NodeClient(ns)
        self.statuses: list = []
        self._lock = threading.Lock()
        self.client.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 50)
        self.hardware_id = f"{ns}/wise_perception"

    def _diag(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self.statuses += [s for s in msg.status if s.hardware_id == self.hardware_id]

    def wait_for_diagnostics(self, models: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for status in reversed(self.statuses):
                    values = {kv.key: kv.value for kv in status.values}
                    if values.get("models") == models:
                        return status, values
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"no diagnostics with models={models!r}:\n{self.log.read_text()}")

    def interrupt(self) -> float:
        """SIGINT; the seconds until the process exited (it must exit with 0)."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            stop_node(self.proc)
        took = time.monotonic() - sent
        print(f"exit {took:.2f} s after SIGINT")
        assert code == 0, self.log.read_text()
        return took

    def close(self) -> None:
        self.client.close()
        stop_node(self.proc)


@pytest.fixture
def make_node(tmp_path):
    made: list[Node] = []

    def make(ns: str, load_delay_s: float = 0.0, **params) -> Node:
        made.append(Node(tmp_path, ns, load_delay_s, **params))
        return made[-1]

    yield make
    for node in made:
        node.close()


def test_while_loading_it_reports_answers_and_exits_on_sigint(make_node):
    node = make_node("/wise_loading", load_delay_s=LOAD_S)
    status, values = node.wait_for_diagnostics("loading")
    started = time.monotonic()  # the load began before the first "loading" status
    assert status.level == DiagnosticStatus.WARN and "loading models" in status.message
    assert values["state"] == "activating"

    sent = time.monotonic()
    node.client.command("the cup", command_id="during-load")
    _, result = node.client.next_result(timeout=PROMPT_S)
    answered = time.monotonic() - sent
    print(f"answered {answered:.2f} s after the command, while loading")
    assert result["status"] == "not_ready" and result["id"] == "during-load"
    assert "models are loading" in result["error"]
    assert time.monotonic() - started < LOAD_S  # all of it happened during the load

    assert node.interrupt() < PROMPT_S
    assert "publisher's context is invalid" not in node.log.read_text()


@pytest.mark.parametrize("state", ["unconfigured", "active"])
def test_sigint_exits_promptly(make_node, state):
    node = make_node(f"/wise_sigint_{state}", autostart=state == "active")
    node.wait_for_diagnostics("loaded" if state == "active" else "not loaded")
    if state == "active":  # with a command in flight
        node.client.publish_image(np.zeros((48, 64, 3), np.uint8))
        node.client.command("the cup")
    assert node.interrupt() < PROMPT_S
    assert "publisher's context is invalid" not in node.log.read_text()


def test_activation_through_the_lifecycle_service_does_not_make_it_deaf(make_node):
    """A lifecycle manager's change_state(activate) loads the models inside a service call."""
    node = make_node("/wise_managed", load_delay_s=LOAD_S, autostart=False)
    client = node.client
    assert client.state(timeout=20) == "unconfigured"
    assert client.transition(Transition.TRANSITION_CONFIGURE, timeout=20)
    activation = threading.Thread(
        target=client.transition, args=(Transition.TRANSITION_ACTIVATE, LOAD_S + 30), daemon=True
    )
    activation.start()
    node.wait_for_diagnostics("loading")
    assert client.state(timeout=PROMPT_S) == "activating"  # get_state is not blocked
    client.command("the cup", command_id=7)
    _, result = client.next_result(timeout=PROMPT_S)
    assert (result["status"], result["id"]) == ("not_ready", 7)
    assert "models are loading" in result["error"]
    assert node.interrupt() < PROMPT_S


def test_a_best_effort_camera_is_reported_to_a_reliable_subscription(make_node):
    """REP 2003 drivers publish reliable; one that publishes best effort is named, with the fix."""
    node = make_node("/wise_qos", image_reliability="reliable")
    node.wait_for_diagnostics("loaded")
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    node.client.node.create_publisher(Image, "/wise_qos/image", best_effort)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _ = node.wait_for_diagnostics("loaded")
        if "image_reliability: best_effort" in status.message:
            break
        time.sleep(0.1)
    assert "image_reliability: best_effort" in status.message
    assert "/wise_qos/image" in status.message
    assert "A best_effort camera needs image_reliability: best_effort" in node.log.read_text()


def test_an_unsupported_frame_is_the_newest_frame(make_node):
    """A 32FC1 depth frame after a good frame: the command gets invalid_image, not the old one."""
    node = make_node("/wise_32fc1", max_image_age_s=10.0)
    node.wait_for_diagnostics("loaded")
    client = node.client
    client.wait_for_state("active", timeout=20, proc=node.proc)
    client.publish_image(np.zeros((48, 64, 3), np.uint8), frame_id="good")
    depth = rm.header_of(client.stamp_now(), "depth")
    msg = Image(header=depth, height=48, width=64, encoding="32FC1", step=256)
    msg.data = bytes(48 * 256)
    client.wait_for_frame("good")
    client.publish_raw(msg)
    client.wait_for_frame("depth")
    client.command("the cup", command_id="depth")
    _, result = client.next_result(timeout=10)
    assert (result["status"], result["frame_id"]) == ("invalid_image", "depth"), result
    assert "unsupported image encoding '32FC1'" in result["error"]
