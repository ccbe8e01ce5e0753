"""Node overhead benchmark: ROS in -> result out, minus the model compute the result reports.

    python -m wise_dev.bench_node                      # stub pipeline (no models)
    python -m wise_dev.bench_node --policy P --segmenter S   # real (e.g. tiny) models
    python -m wise_dev.bench_node --stream-seconds 20  # + image QoS under a 30 Hz stream

The node runs in its own process (``python -m wise_perception.node``, or
``python -m wise_dev.stub_node`` with a stub pipeline whose compute is ~0), the benchmark process publishes
images and commands over DDS and waits for each result. Printed per image size:

* ``node``: the node's own ``node_overhead_ms`` (command callback -> result publish, minus
  queue wait, image wait and the pipeline call): conversion, pairing, mask/rationale publish.
* ``cmd->result``: command published -> result received, minus the pipeline time in the
  result (adds DDS transport of the command and result, executor dispatch).
* ``img+cmd->result``: image and command published back to back -> result received, minus
  the pipeline time (adds the image's transport). Target: <= 5 ms at 1280x720 for ``node``.

With ``--stream-seconds N``, for each image subscription reliability (``best_effort``,
``reliable``) a fresh stub node receives a 30 Hz 640x480 rgb8 stream from a reliable
publisher (REP 2003: drivers publish with the system default QoS) for N seconds, with a
command every 0.25 s, each sent right after a frame. Printed: the share of published frames
the node received, the age of the frame a command was paired with (median, p95, max), and
the share of commands paired with the frame published just before them (a lost frame makes
a command use an older one).
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from wise_perception.node import messages as rm
from wise_perception.result import Status

from .node_client import NodeClient, node_command, start_node, stop_node

SIZES = ((640, 480), (1280, 720))
STREAM_SIZE = (640, 480)
STREAM_HZ = 30.0
STREAM_COMMAND_PERIOD_S = 0.25
# A command goes out this long after its frame: half a frame period, as a command would on
# average, so "paired with the newest frame" measures loss and delay, not a race by design.
STREAM_COMMAND_OFFSET_S = 0.5 / STREAM_HZ
RELIABILITIES = ("best_effort", "reliable")
# Statuses whose request went through the model (an unparsable answer still did).
MEASURABLE = {Status.OK.value, Status.UNPARSABLE_ANSWER.value}
COMMAND = "the red square"


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
        sent, received, result = _image_and_command(client, rgb, f"bench{i}b")
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


# An image and its command are on two topics, and DDS orders nothing between them: on a busy
# machine the command can reach the node before the old-stamped frame that was to retire the
# previous image, and pairs with that image. Such a sample measures no image transport; it is
# taken again, at most this many times.
PAIRING_TRIES = 5


def _image_and_command(
    client: NodeClient, rgb: np.ndarray, frame_id: str
) -> tuple[float, float, dict[str, Any]]:
    """(sent, received, result) of a command published with its image: an old-stamped frame
    first, so the command cannot use a previous image and waits for the one published with it
    (its latency includes that image's transport)."""
    for _ in range(PAIRING_TRIES):
        client.publish_image(rgb[:8, :8], frame_id="old", stamp=Time(sec=1))
        time.sleep(0.2)
        client.drain()
        sent = time.perf_counter()
        client.publish_image(rgb, frame_id=frame_id)
        client.command(COMMAND)
        received, result = client.next_result()
        if result["frame_id"] == frame_id:
            return sent, received, result
    raise RuntimeError(
        f"command paired with {result['frame_id']!r}, not {frame_id!r}, {PAIRING_TRIES} times: "
        f"{result['status']} {result['error']}"
    )


def measure_stream(client: NodeClient, proc: subprocess.Popen, seconds: float) -> dict[str, float]:
    """A 30 Hz 640x480 stream for ``seconds`` with a command every 0.25 s (see module doc)."""
    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics: list[DiagnosticArray] = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    # The system default QoS (reliable, keep last 10): what REP 2003 asks drivers to publish.
    camera = client.node.create_publisher(
        Image, f"{client.ns}/image", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    deadline = time.monotonic() + 10.0
    while camera.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    width, height = STREAM_SIZE
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = rm.numpy_to_image(rgb, "rgb8", rm.header_of(client.stamp_now(), "f0"))
    client.drain()
    frames = int(seconds * STREAM_HZ)
    every = max(round(STREAM_COMMAND_PERIOD_S * STREAM_HZ), 1)
    start = time.monotonic()
    sent_commands: set[int] = set()  # a command's id is the index of the frame before it
    for i in range(frames):
        tick = start + i / STREAM_HZ
        time.sleep(max(tick - time.monotonic(), 0.0))
        msg.header = rm.header_of(client.stamp_now(), f"f{i}")
        camera.publish(msg)
        if i % every == every - 1:
            time.sleep(STREAM_COMMAND_OFFSET_S)
            client.command(COMMAND, command_id=i)
            sent_commands.add(i)
    ages, lags = [], []
    deadline = time.monotonic() + 10.0
    while len(ages) < len(sent_commands) and time.monotonic() < deadline:
        try:
            _, result = client.next_result(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if result.get("id") not in sent_commands or result["status"] not in MEASURABLE:
            continue
        ages.append(result["node"]["image_age_ms"])
        lags.append(result["id"] - int(result["frame_id"].lstrip("f")))
    time.sleep(1.0)  # a diagnostics message published after the last frame arrived
    if proc.poll() is not None:
        raise RuntimeError(f"node process exited with {proc.returncode}")
    mine = [s for a in diagnostics for s in a.status if s.hardware_id.startswith(client.ns + "/")]
    received = int({kv.key: kv.value for kv in mine[-1].values}["images"]) if mine else 0
    client.node.destroy_publisher(camera)
    figures: dict[str, float] = {
        "frames": frames,
        "received_pct": 100.0 * received / frames,
        "commands": len(sent_commands),
        "answered": len(ages),
    }
    if not ages:  # every frame a command looked for was lost: a measurement, not an error
        nan = float("nan")
        return figures | dict.fromkeys(
            ("age_median_ms", "age_p95_ms", "age_max_ms", "newest_pct", "max_lag_frames"), nan
        )
    ordered = sorted(ages)
    return figures | {
        "age_median_ms": statistics.median(ages),
        "age_p95_ms": ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)],
        "age_max_ms": ordered[-1],
        "newest_pct": 100.0 * sum(lag == 0 for lag in lags) / len(lags),
        "max_lag_frames": max(lags),
    }


def run_stream(
    seconds: float, domain_id: int, reliabilities: Sequence[str] = RELIABILITIES
) -> dict[str, dict[str, float]]:
    """:func:`measure_stream` against a fresh stub node per image reliability."""
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    figures: dict[str, dict[str, float]] = {}
    for reliability in reliabilities:
        ns = f"/wise_stream_{reliability}"
        params = {
            "image_reliability": reliability,
            "max_image_age_s": 5.0,
            "command_wait_s": 1.0,
            "queue_size": 16,
            "diagnostics_period_s": 0.5,
        }
        proc = start_node(node_command(params, ns, stub=True), domain_id)
        rclpy.init()
        client = NodeClient(ns)
        try:
            client.wait_for_state("active", timeout=60.0, proc=proc)
            figures[reliability] = measure_stream(client, proc, seconds)
        finally:
            client.close()
            rclpy.try_shutdown()
            stop_node(proc)
    return figures


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--policy", help="policy folder (default: stub pipeline, no models)")
    parser.add_argument("--segmenter", help="SAM2 folder (with --policy)")
    parser.add_argument("--domain-id", type=int, default=77)
    parser.add_argument(
        "--stream-seconds",
        type=float,
        default=0.0,
        help="also measure image QoS under a 30 Hz 640x480 stream for this long (0: skip)",
    )
    parser.add_argument("--only-stream", action="store_true", help="skip the overhead measurement")
    opts = parser.parse_args(argv)
    if opts.stream_seconds > 0:
        stream = run_stream(opts.stream_seconds, opts.domain_id)
        print(
            f"{'reliability':>12} {'received':>9} {'answered':>9} {'age med':>8} {'p95':>7} "
            f"{'max':>7} {'newest':>7} {'max lag':>8}   (30 Hz 640x480, ages in ms)"
        )
        for name, f in stream.items():
            print(
                f"{name:>12} {f['received_pct']:>8.1f}% {f['answered']:>4}/{f['commands']:<4} "
                f"{f['age_median_ms']:>8.1f} {f['age_p95_ms']:>7.1f} {f['age_max_ms']:>7.1f} "
                f"{f['newest_pct']:>6.1f}% {f['max_lag_frames']:>8.0f}"
            )
        if opts.only_stream:
            return 0
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
