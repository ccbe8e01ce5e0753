"""Node overhead benchmark: ROS in -> result out, minus the model compute the result reports.

    python -m wise_perception.bench_node                      # stub pipeline (no models)
    python -m wise_perception.bench_node --policy P --segmenter S   # real (e.g. tiny) models

The node runs in its own process (``python -m wise_perception.node``, or this module's
``--serve`` mode with a stub pipeline whose compute is ~0), the benchmark process publishes
images and commands over DDS and waits for each result. Printed per image size:

* ``node``: the node's own ``node_overhead_ms`` (command callback -> result publish, minus
  queue wait, image wait and the pipeline call): conversion, pairing, mask/rationale publish.
* ``cmd->result``: command published -> result received, minus the pipeline time in the
  result (adds DDS transport of the command and result, executor dispatch).
* ``img+cmd->result``: image and command published back to back -> result received, minus
  the pipeline time (adds the image's transport). Target: <= 5 ms at 1280x720 for ``node``.

:class:`NodeClient` is also what the node tests use to drive a node process.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from . import ros_messages as rm
from .core.answer import ObjectPrompt
from .result import ObjectResult, Result, Status, Timings

SIZES = ((640, 480), (1280, 720))
# Statuses whose request went through the model (an unparsable answer still did).
MEASURABLE = {Status.OK.value, Status.UNPARSABLE_ANSWER.value}
COMMAND = "the red square"


class StubPipeline:
    """A pipeline with ~zero compute: a centred box mask, so only the node's cost remains."""

    def segment(self, image_rgb: np.ndarray, command: str, *, frame_key: object = None) -> Result:
        start = time.perf_counter()
        height, width = image_rgb.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        box = (width / 4, height / 4, 3 * width / 4, 3 * height / 4)
        mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
        obj = ObjectPrompt(box=box, points=((width / 2, height / 2),))
        total = time.perf_counter() - start
        return Result(
            command=command,
            status=Status.OK,
            rationale="the stub always picks the centre.",
            objects=[ObjectResult(box=obj.box, points=obj.points, score=1.0)],
            mask=mask,
            image_size=(width, height),
            timings=Timings(total=total),
            mode="stub",
        )

    def warmup(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def stub_factory(settings: object) -> StubPipeline:
    return StubPipeline()


def node_command(
    params: dict[str, Any], namespace: str = "/wise", *, stub: bool = False
) -> list[str]:
    """Command line of a node process (the real node, or the stub-pipeline node)."""
    module = (
        ["-m", "wise_perception.bench_node", "--serve"] if stub else ["-m", "wise_perception.node"]
    )
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
        self.node.create_subscription(String, f"{self.ns}/result", self._on_result, reliable)
        self.node.create_subscription(Image, f"{self.ns}/mask", self.masks.put, reliable)
        self.node.create_subscription(
            String, f"{self.ns}/rationale", lambda m: self.rationales.put(m.data), reliable
        )
        lifecycle = f"{self.ns}/{node_name}"
        self.change_state = self.node.create_client(ChangeState, f"{lifecycle}/change_state")
        self.get_state = self.node.create_client(GetState, f"{lifecycle}/get_state")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_result(self, msg: String) -> None:
        self.results.put((time.perf_counter(), json.loads(msg.data)))

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

    def command(self, text: str) -> float:
        sent = time.perf_counter()
        self.command_pub.publish(String(data=text))
        return sent

    def next_result(self, timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
        return self.results.get(timeout=timeout)

    def drain(self) -> None:
        for q in (self.results, self.masks, self.rationales):
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


def measure(client: NodeClient, width: int, height: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    node_ms, cmd_ms, both_ms = [], [], []
    for i in range(repeats + 2):  # the first two warm up DDS and the caches
        client.drain()
        client.publish_image(rgb, frame_id=f"bench{i}")
        time.sleep(0.05)
        sent = client.command(COMMAND)
        received, result = client.next_result()
        if result["status"] not in MEASURABLE:
            raise RuntimeError(f"benchmark command failed: {result['status']}: {result['error']}")
        compute = result["node"].get("pipeline_ms", 0.0)
        cmd = (received - sent) * 1e3 - compute
        # An old-stamped frame first, so the command cannot use a previous image: it waits
        # for the one published with it, and the latency includes that image's transport.
        client.publish_image(rgb[:8, :8], frame_id="old", stamp=Time(sec=1))
        time.sleep(0.05)
        client.drain()
        sent = time.perf_counter()
        client.publish_image(rgb, frame_id=f"bench{i}b")
        client.command(COMMAND)
        received, result = client.next_result()
        if result["frame_id"] != f"bench{i}b":
            raise RuntimeError(f"command paired with {result['frame_id']!r}: {result['error']}")
        both = (received - sent) * 1e3 - result["node"].get("pipeline_ms", 0.0)
        if i >= 2:
            node_ms.append(result["node"]["node_overhead_ms"])
            cmd_ms.append(cmd)
            both_ms.append(both)
    return {
        "node_ms": statistics.median(node_ms),
        "cmd_to_result_ms": statistics.median(cmd_ms),
        "img_cmd_to_result_ms": statistics.median(both_ms),
    }


def run(
    repeats: int = 20,
    sizes: Sequence[tuple[int, int]] = SIZES,
    policy: str | None = None,
    segmenter: str | None = None,
    domain_id: int = 77,
) -> dict[str, dict[str, float]]:
    # Reliable images: best-effort 1 MB+ frames over loopback UDP drop often, which would only
    # measure DDS losses (a camera at 30 Hz hides them; one-shot benchmark frames cannot).
    params: dict[str, Any] = {
        "command_wait_s": 2.0,
        "max_image_age_s": 5.0,
        "image_reliability": "reliable",
    }
    stub = policy is None
    if not stub:
        params |= {
            "policy_model": policy,
            "segmenter_model": segmenter,
            "device": "cpu",
            "max_new_tokens": 32,
        }
    proc = start_node(node_command(params, "/wise_bench", stub=stub), domain_id)
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    client = NodeClient("/wise_bench")
    figures: dict[str, dict[str, float]] = {}
    try:
        client.wait_for_state("active", timeout=120.0, proc=proc)
        for width, height in sizes:
            figures[f"{width}x{height}"] = measure(client, width, height, repeats)
    finally:
        client.close()
        rclpy.try_shutdown()
        stop_node(proc)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--serve":  # the node process with the stub pipeline
        from .node import main as node_main

        return node_main(args=[sys.argv[0], *argv[1:]], pipeline_factory=stub_factory)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--policy", help="policy folder (default: stub pipeline, no models)")
    parser.add_argument("--segmenter", help="SAM2 folder (with --policy)")
    parser.add_argument("--domain-id", type=int, default=77)
    opts = parser.parse_args(argv)
    figures = run(
        opts.repeats, policy=opts.policy, segmenter=opts.segmenter, domain_id=opts.domain_id
    )
    print(
        f"{'size':>10} {'node':>10} {'cmd->result':>13} {'img+cmd->result':>16}   (median ms, model compute excluded)"
    )
    for size, f in figures.items():
        print(
            f"{size:>10} {f['node_ms']:>10.2f} {f['cmd_to_result_ms']:>13.2f} {f['img_cmd_to_result_ms']:>16.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
