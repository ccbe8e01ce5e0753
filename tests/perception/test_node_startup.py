"""The node while its models load, on SIGINT, and with a camera whose QoS it cannot match.

Each test starts its own node process (``python -m wise_dev.stub_node``) over real DDS. Its pipeline is
a stand-in: the stub of :mod:`wise_dev.stub_node`, whose "load" sleeps
``--load-delay-s`` seconds, standing in for the multi-minute load of a 7B checkpoint (which
cannot run here). Everything else (lifecycle, executor, signals, topics) is the real node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
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
        """The newest status whose ``models`` value is ``models``."""
        return self.wait_for(lambda _, values: values.get("models") == models, models, timeout)

    def wait_for(self, condition, what: str, timeout: float = 20.0):
        """The newest status (and its values) for which ``condition(status, values)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for status in reversed(self.statuses):
                    values = {kv.key: kv.value for kv in status.values}
                    if condition(status, values):
                        return status, values
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"no diagnostics with {what}:\n{self.log.read_text()}")

    def interrupt(self) -> float:
        """SIGINT; the seconds until the process exited (it must exit with 0)."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 30 s after SIGINT:\n{self.log.read_text()}") from None
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


WALK_LOAD_S = 10.0  # the stand-in load of the walk through the states


def test_a_command_is_answered_exactly_once_in_every_lifecycle_state(make_node):
    """Unconfigured, inactive, activating, active, inactive again, unconfigured again and
    finalized: one result per command (not_ready saying why, or served), never none, never two."""
    node = make_node("/wise_walk", load_delay_s=WALK_LOAD_S, autostart=False, max_image_age_s=60.0)
    client = node.client
    expected: dict[str, tuple[str, str]] = {}  # id -> (status, text in the error)

    def ask(ident: str, status: str, needle: str) -> None:
        expected[ident] = (status, needle)
        client.command("the cup", command_id=ident)
        _, result = client.next_result(timeout=PROMPT_S)
        assert (result["id"], result["status"]) == (ident, status), result
        assert needle in result["error"], result

    assert client.state(timeout=20) == "unconfigured"
    ask("unconfigured", "not_ready", "node is unconfigured")
    assert client.transition(Transition.TRANSITION_CONFIGURE, timeout=20)
    ask("inactive", "not_ready", "node is inactive")
    activation = threading.Thread(
        target=client.transition, args=(Transition.TRANSITION_ACTIVATE, WALK_LOAD_S + 30)
    )
    activation.start()
    node.wait_for_diagnostics("loading")
    ask("activating", "not_ready", "models are loading")
    activation.join()
    client.wait_for_state("active", timeout=20, proc=node.proc)
    client.publish_image(RGB, frame_id="walk")
    client.wait_for_frame("walk")
    ask("active", "ok", "")
    assert client.transition(Transition.TRANSITION_DEACTIVATE, timeout=20)
    ask("deactivated", "not_ready", "node is inactive")
    assert client.transition(Transition.TRANSITION_CLEANUP, timeout=20)
    ask("cleaned up", "not_ready", "node is unconfigured")
    assert client.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, timeout=20)
    ask("finalized", "not_ready", "finalized")
    time.sleep(2.0)  # a second result of any of them would have come by now
    assert client.results.empty(), client.results.get_nowait()
    assert node.proc.poll() is None


def test_a_failed_transition_is_logged_reported_and_named_in_every_result(make_node):
    """A configure that fails (a choice that is not one): the node stays up and says why in
    its log (once, as it happens), on /diagnostics and in each command's not_ready."""
    node = make_node("/wise_bad_mode", mode="fastest")
    status, values = node.wait_for(lambda s, _: s.level == DiagnosticStatus.ERROR, "an error")
    assert values["state"] == "unconfigured"
    assert "configure failed: invalid parameters: mode='fastest' is not one of" in status.message
    node.client.command("the cup", command_id=1)
    _, result = node.client.next_result(timeout=PROMPT_S)
    assert (result["status"], result["id"]) == ("not_ready", 1)
    assert "node is unconfigured" in result["error"]
    assert "last configure failed: invalid parameters: mode='fastest'" in result["error"]
    log = node.log.read_text()
    assert log.count("]: configure failed: invalid parameters: mode='fastest'") == 1, log
    assert node.proc.poll() is None  # exit_on_autostart_failure is off: it stays up


BEST_EFFORT = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
RGB = np.zeros((48, 64, 3), np.uint8)


def _publish_until_received(node: Node, publisher, frame_id: str, timeout: float = 20.0) -> None:
    """Publish a frame every 0.2 s until the node reports it as its newest (best effort may
    drop one)."""
    msg = rm.numpy_to_image(RGB, "rgb8", rm.header_of(node.client.stamp_now(), frame_id))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg.header.stamp = node.client.stamp_now()
        publisher.publish(msg)
        with contextlib.suppress(TimeoutError):
            node.client.wait_for_frame(frame_id, timeout=0.2)
            return
    raise AssertionError(f"frame {frame_id!r} never arrived:\n{node.log.read_text()}")


def test_auto_image_qos_takes_the_reliability_the_cameras_offer(make_node):
    """image_reliability: auto (the default), as ros2 bag record: best effort while a camera
    offers only that, reliable again once every publisher is reliable (the client's is)."""
    node = make_node("/wise_auto_qos", max_image_age_s=30.0)
    node.wait_for_diagnostics("loaded")
    client = node.client
    camera = client.node.create_publisher(Image, "/wise_auto_qos/image", BEST_EFFORT)
    node.wait_for(lambda _, v: v.get("image_reliability") == "best_effort", "best_effort chosen")
    _publish_until_received(node, camera, "best_effort_camera")
    client.command("the cup", command_id="from best effort")
    _, result = client.next_result(timeout=10)
    assert (result["status"], result["frame_id"]) == ("ok", "best_effort_camera"), result

    client.node.destroy_publisher(camera)  # the reliable publisher of the client remains
    node.wait_for(lambda _, v: v.get("image_reliability") == "reliable", "reliable chosen")
    _publish_until_received(node, client.image_pub, "reliable_camera")
    client.command("the cup", command_id="from reliable")
    _, result = client.next_result(timeout=10)
    assert (result["status"], result["frame_id"]) == ("ok", "reliable_camera"), result
    status, _ = node.wait_for_diagnostics("loaded")
    assert status.level == DiagnosticStatus.OK and "mismatch" not in status.message
    assert "now call for best_effort" in node.log.read_text()


def test_an_explicit_choice_is_kept_and_a_mismatch_is_named(make_node):
    """reliable against a best-effort camera: named on /diagnostics, in the log and in every
    no_image result; best_effort receives from a reliable camera."""
    node = make_node("/wise_qos", image_reliability="reliable")
    node.wait_for_diagnostics("loaded")
    node.client.node.create_publisher(Image, "/wise_qos/image", BEST_EFFORT)
    status, values = node.wait_for(lambda s, _: "QoS mismatch" in s.message, "the mismatch")
    assert status.level == DiagnosticStatus.WARN and values["image_reliability"] == "reliable"
    assert "1 publisher(s) on /wise_qos/image offer only best_effort" in status.message
    node.client.command("the cup", command_id="mismatch")
    _, result = node.client.next_result(timeout=10)
    assert (result["status"], result["id"]) == ("no_image", "mismatch")
    assert "no image received" in result["error"] and "QoS mismatch" in result["error"]
    assert "set image_reliability: auto or best_effort" in result["error"]
    assert "QoS mismatch: 1 publisher(s) on /wise_qos/image" in node.log.read_text()

    lossy = make_node("/wise_lossy", image_reliability="best_effort", max_image_age_s=30.0)
    lossy.wait_for_diagnostics("loaded")
    _publish_until_received(lossy, lossy.client.image_pub, "reliable_camera")  # reliable
    lossy.client.command("the cup")
    _, result = lossy.client.next_result(timeout=10)
    assert (result["status"], result["frame_id"]) == ("ok", "reliable_camera"), result
    _, values = lossy.wait_for_diagnostics("loaded")
    assert values["image_reliability"] == "best_effort"


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
