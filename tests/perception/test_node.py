"""The lifecycle node, running in its own process, driven over real DDS by this process.

Three node processes are started once for the module (in parallel): ``/wise`` with the taught
tiny policy (always answers), ``/wise_random`` with the random tiny policy (unparsable
output) and ``/wise_ahead``, the taught policy with ``encode_ahead: true``. Tests run in file
order on the shared ``/wise`` node; every bad input is answered with an error result, after
which a good command must still succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra or a ROS 2 install)")

import rclpy
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import Transition
from sensor_msgs.msg import Image
from std_msgs.msg import String
from support.nodes import node_processes

from wise_dev.node_client import NodeClient, node_command
from wise_perception.core.limits import ECHO_CHARS, bounded
from wise_perception.node import messages as rm
from wise_perception.result import Status

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "wise_perception" / "config" / "segment.yaml"
# A unique DDS domain per module and per run, so concurrent test runs do not cross-talk.
DOMAIN_ID = 1 + os.getpid() % 50
QUEUE_SIZE = 2
COMMAND_WAIT_S = 1.0
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
RESULT_KEYS = {
    "schema_version", "command", "status", "error", "mode", "rationale", "reasoning_tokens",
    "generated_tokens", "image_size", "objects", "mask_pixels", "timings", "stamp", "frame_id",
    "node", "id",
}  # fmt: skip


def _params(policy: Path, sam2: Path) -> dict[str, object]:
    return {
        "policy_model": str(policy),
        "segmenter_model": str(sam2),
        "device": "cpu",
        "dtype": "float32",
        "max_new_tokens": 96,
        "queue_size": QUEUE_SIZE,
        "command_wait_s": COMMAND_WAIT_S,
        "max_image_age_s": 10.0,
        # best effort drops large frames over loopback UDP now and then; tests need every frame
        "image_reliability": "reliable",
        "diagnostics_period_s": 0.2,
        "max_image_pixels": 200 * 200,
    }


@pytest.fixture(scope="module")
def nodes(taught_policy_dir, tiny_policy_dir, tiny_sam2_dir, tmp_path_factory):
    """The two node processes and a client for each; stopped (SIGINT) after the module."""
    logs = tmp_path_factory.mktemp("node_logs")
    commands = {}
    for ns, policy, extra in (
        ("/wise", taught_policy_dir, {}),
        ("/wise_random", tiny_policy_dir, {}),
        # `true` reaches ROS as a bool, as from a command line or a YAML file: accepted too
        ("/wise_ahead", taught_policy_dir, {"encode_ahead": True}),
    ):
        cmd = node_command({**_params(policy, tiny_sam2_dir), **extra}, ns)
        # the documented way to start without launch: the YAML, then per-test overrides
        cmd[cmd.index("--ros-args") + 1 : cmd.index("--ros-args") + 1] = [
            "--params-file",
            str(PARAMS_FILE),
        ]
        commands[ns] = cmd
    with node_processes(commands, DOMAIN_ID, logs, active_timeout=90.0) as (clients, procs):
        yield clients, procs, logs


@pytest.fixture
def wise(nodes):
    clients, procs, _ = nodes
    client = clients["/wise"]
    client.drain()
    yield client
    assert procs["/wise"].poll() is None, "the node process died"


def result_for(client: NodeClient, command: str, timeout: float = 30.0) -> dict:
    """The next result of ``command`` (results of other commands are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        _, result = client.next_result(timeout=max(deadline - time.monotonic(), 0.01))
        if result["command"] == bounded(command, ECHO_CHARS):  # results echo a bounded command
            return result


def ask(client: NodeClient, command: str, command_id: str | int | None = None) -> dict:
    client.command(command, command_id)
    return result_for(client, command)


def send_image(client: NodeClient, frame_id: str, rgb: np.ndarray = RGB, **kw) -> Image:
    msg = client.publish_image(rgb, frame_id=frame_id, **kw)
    client.wait_for_frame(frame_id)  # it arrives before the command that should use it
    return msg


def assert_still_serving(client: NodeClient, tag: str) -> None:
    send_image(client, f"good_after_{tag}")
    result = ask(client, f"the red square after {tag}")
    assert result["status"] == "ok", result["error"]
    assert result["frame_id"] == f"good_after_{tag}"


def raw_image(frame_id: str, **fields) -> Image:
    msg = rm.numpy_to_image(RGB, "rgb8", rm.header_of(Time(), frame_id))
    msg.header.stamp = rclpy.clock.Clock().now().to_msg()
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


# --------------------------------------------------------------------------- tests, in order
def test_command_before_any_image_gets_no_image(wise):
    started = time.monotonic()
    result = ask(wise, "the cup before any image")
    assert result["status"] == "no_image"
    assert "no image received" in result["error"]
    assert time.monotonic() - started >= COMMAND_WAIT_S * 0.9  # it waited for one
    # no image: the node clock's stamp and an empty frame_id
    assert result["frame_id"] == "" and result["stamp"]["sec"] > 0


def test_success_publishes_mask_rationale_and_result_with_source_header(wise):
    msg = send_image(wise, "cam_ok")
    result = ask(wise, "the red square")
    assert result["status"] == "ok", result["error"]
    assert set(result) >= RESULT_KEYS
    assert result["frame_id"] == "cam_ok"
    assert result["stamp"] == {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec}
    assert result["image_size"] == [64, 48] and result["mode"] == "wise_s"
    assert len(result["objects"]) == 1 and len(result["objects"][0]["box"]) == 4
    # the taught policy's fixed <think>: "the red square is on the left"
    assert result["reasoning_tokens"] > 0 and "red square" in result["rationale"]
    assert result["timings"]["total_ms"] > 0
    node = result["node"]
    assert {"request_id", "queue_wait_ms", "node_overhead_ms", "pipeline_ms", "latency_ms"} <= set(
        node
    )

    mask = wise.masks.get(timeout=5)
    assert mask.encoding == "mono8" and (mask.width, mask.height) == (64, 48)
    assert mask.header.frame_id == "cam_ok" and mask.header.stamp == msg.header.stamp
    values = np.frombuffer(bytes(mask.data), np.uint8)
    assert set(np.unique(values)) <= {0, 255}
    assert int((values == 255).sum()) == result["mask_pixels"]
    assert wise.rationales.get(timeout=5) == result["rationale"]


@pytest.mark.parametrize(("encoding", "pad"), [("bgr8", 3), ("mono8", 1), ("rgba8", 0)])
def test_other_encodings_and_row_padding(wise, encoding, pad):
    channels = {"bgr8": 3, "mono8": 1, "rgba8": 4}[encoding]
    pixels = RGB[:, :, :channels] if channels < 4 else np.concatenate([RGB, RGB[:, :, :1]], 2)
    rows = np.ascontiguousarray(pixels).reshape(48, -1)
    msg = raw_image(f"cam_{encoding}", encoding=encoding, step=rows.shape[1] + pad)
    msg.data = np.concatenate([rows, np.zeros((48, pad), np.uint8)], 1).tobytes()
    wise.publish_raw(msg)
    wise.wait_for_frame(f"cam_{encoding}")
    result = ask(wise, f"the red square in {encoding}")
    assert result["status"] == "ok", result["error"]
    assert result["frame_id"] == f"cam_{encoding}"


@pytest.mark.parametrize(
    ("tag", "fields", "needle"),
    [
        ("encoding", {"encoding": "16UC1"}, "unsupported image encoding '16UC1'"),
        ("yuv", {"encoding": "yuv422"}, "unsupported image encoding 'yuv422'"),
        ("zero", {"width": 0, "height": 0, "step": 0, "data": b""}, "image has zero size"),
        ("depth", {"encoding": "32FC1", "step": 256, "data": bytes(48 * 256)}, "'32FC1'"),
        ("short_data", {"data": bytes(48 * 64 * 3 - 5)}, "but step*height"),
        ("short_step", {"step": 10}, "shorter than a row"),
        (
            "huge",
            {"width": 400, "height": 400, "step": 1200, "data": bytes(400 * 1200)},
            "max_image_pixels",
        ),
    ],
)
def test_bad_image_gets_invalid_image_and_node_keeps_serving(wise, tag, fields, needle):
    wise.publish_raw(raw_image(f"bad_{tag}", **fields))
    wise.wait_for_frame(f"bad_{tag}")
    result = ask(wise, f"the cup on a bad {tag} image")
    assert result["status"] == "invalid_image"
    assert needle in result["error"]
    assert result["frame_id"] == f"bad_{tag}"  # the header of the image it concerns
    assert_still_serving(wise, tag)


@pytest.mark.parametrize(
    ("tag", "command"), [("empty", "   "), ("long", "x" * 10_000)], ids=["empty", "long"]
)
def test_bad_command_gets_invalid_command(wise, tag, command):
    send_image(wise, "cam_cmd")
    result = ask(wise, command)
    assert result["status"] == "invalid_command"
    assert ("empty" if tag == "empty" else "10000 characters") in result["error"]
    assert_still_serving(wise, f"{tag}_command")


def test_a_json_command_carries_the_callers_id_to_its_result(wise):
    send_image(wise, "cam_id")
    result = ask(wise, "the red square with an id", command_id="pick-7")
    assert result["status"] == "ok", result["error"]
    assert result["id"] == "pick-7" and result["command"] == "the red square with an id"
    plain = ask(wise, "the red square without an id")
    assert plain["status"] == "ok" and plain["id"] is None
    assert plain["node"]["request_id"] > result["node"]["request_id"]  # the node's own, too


def test_a_malformed_json_command_keeps_the_id_it_could_read(wise):
    wise.command_pub.publish(String(data='{"id": 41, "command": ["the cup"]}'))
    _, result = wise.next_result(timeout=10)
    assert (result["status"], result["id"]) == ("invalid_command", 41)
    assert '"command" must be a string' in result["error"]
    assert_still_serving(wise, "malformed_json")


def test_a_huge_command_is_rejected_and_not_echoed_in_full(wise):
    wise.command_pub.publish(String(data="x" * 1_000_000))
    _, result = wise.next_result(timeout=10)
    assert result["status"] == "invalid_command"
    assert "1000000 characters; the limit is 1000" in result["error"]
    assert len(json.dumps(result)) < 4000  # not a megabyte
    assert_still_serving(wise, "huge_command")


def test_stale_image_gets_no_image(wise):
    old = wise.stamp_now()
    old.sec -= 3600
    send_image(wise, "cam_old", stamp=old)
    result = ask(wise, "the cup in an old image")
    assert result["status"] == "no_image"
    assert "stale" in result["error"] and "max_image_age_s" in result["error"]
    assert_still_serving(wise, "stale")


def test_flood_every_command_gets_exactly_one_result(wise):
    send_image(wise, "cam_flood")
    # identical commands: only the caller's id tells their results apart
    ids = [f"flood-{i}" for i in range(100)]
    for ident in ids:
        wise.command("the red square", command_id=ident)
    results = []
    deadline = time.monotonic() + 60
    while len(results) < 100 and time.monotonic() < deadline:
        results.append(wise.next_result(timeout=max(deadline - time.monotonic(), 0.01))[1])
    time.sleep(0.5)  # nothing more may come
    assert wise.results.empty()
    assert sorted(r["id"] for r in results) == sorted(ids)
    statuses = [r["status"] for r in results]
    # each one is answered (ok, or an error such as unparsable_answer on an unseen question)
    # or explicitly rejected; inference is slower than publishing 100 commands, so the
    # small queue must overflow
    assert set(statuses) <= {s.value for s in Status}
    assert statuses.count("queue_full") >= 1
    assert len(statuses) - statuses.count("queue_full") >= QUEUE_SIZE
    rejected = next(r for r in results if r["status"] == "queue_full")
    assert "queue_size=2" in rejected["error"] and rejected["frame_id"] == "cam_flood"
    assert_still_serving(wise, "flood")


def test_unparsable_policy_output(nodes):
    clients, procs, _ = nodes
    client = clients["/wise_random"]
    client.drain()
    send_image(client, "cam_random")
    result = ask(client, "the red square for a random policy")
    assert result["status"] == "unparsable_answer", result
    assert result["error"] and result["frame_id"] == "cam_random"
    assert client.masks.empty() and client.rationales.empty()  # successes only
    assert procs["/wise_random"].poll() is None


def _encode_cache(values: dict) -> dict:
    return json.loads(values.get("encode_cache", "{}"))


def test_without_encode_ahead_the_command_pays_the_encoder(wise):
    """encode_ahead: auto (segment.yaml) is off where SAM2 runs on the CPU, as here."""
    wise.publish_image(RGB, frame_id="cam_encode_off")
    # diagnostics made after the frame came, so after every earlier command was served
    values = wise.wait_for_diagnostics(
        lambda v: v.get("newest_frame") == "cam_encode_off", "frame 'cam_encode_off'"
    )
    assert (values["encode_ahead"], values["encoded_ahead"]) == ("off", "")
    before = _encode_cache(values)
    result = ask(wise, "the red square, encoded by its command")
    assert result["status"] == "ok", result["error"]
    assert result["frame_id"] == "cam_encode_off"
    assert result["timings"]["segmenter_encode_ms"] > 0  # the command paid for the encoder
    after = _encode_cache(
        wise.wait_for_diagnostics(
            lambda v: _encode_cache(v).get("misses") == before["misses"] + 1, "one cache miss"
        )
    )
    assert after["hits"] == before["hits"]


def test_encode_ahead_a_command_on_a_frame_encoded_while_idle_pays_no_encoder(nodes):
    clients, procs, _ = nodes
    client = clients["/wise_ahead"]
    client.drain()
    client.publish_image(RGB, frame_id="cam_ahead")
    values = client.wait_for_diagnostics(
        lambda v: v.get("encoded_ahead") == "cam_ahead", "frame 'cam_ahead' encoded ahead"
    )
    assert values["encode_ahead"] == "on" and values["newest_frame"] == "cam_ahead"
    before = _encode_cache(values)
    assert before["misses"] >= 1  # the encoding ahead started it
    result = ask(client, "the red square on a frame encoded ahead")
    assert result["status"] == "ok", result["error"]
    assert result["frame_id"] == "cam_ahead"
    assert result["timings"]["segmenter_encode_ms"] == 0  # the encoder was paid while idle
    after = _encode_cache(
        client.wait_for_diagnostics(
            lambda v: _encode_cache(v).get("hits") == before["hits"] + 1, "one cache hit"
        )
    )
    assert after["misses"] == before["misses"]  # the command encoded nothing
    assert procs["/wise_ahead"].poll() is None


def test_diagnostics(wise):
    from diagnostic_msgs.msg import DiagnosticArray

    wise.publish_image(RGB, frame_id="cam_diag")
    wise.wait_for_frame("cam_diag")  # diagnostics name the newest frame, the next command's
    got = []
    sub = wise.node.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    try:
        deadline = time.monotonic() + 10
        mine = []
        while not mine and time.monotonic() < deadline:
            time.sleep(0.1)
            mine = [s for a in got for s in a.status if s.hardware_id == "/wise/wise_perception"]
    finally:
        wise.node.destroy_subscription(sub)
    assert mine, "no /diagnostics from the node"
    values = {kv.key: kv.value for kv in mine[-1].values}
    assert values["state"] == "active" and int(values["ok"]) > 0 and int(values["errors"]) > 0
    assert {"queue_depth", "last_latency_ms", "counts"} <= set(values)
    assert values["newest_frame"] == "cam_diag"
    assert json.loads(values["counts"])["queue_full"] > 0


def test_deactivate_frees_models_then_not_ready_then_reactivate(wise):
    assert wise.change_state.srv_name == "/wise/wise_perception/change_state"
    assert wise.transition(Transition.TRANSITION_DEACTIVATE)
    assert wise.state() == "inactive"
    result = ask(wise, "the cup while inactive", command_id=5)
    assert result["status"] == "not_ready" and result["id"] == 5
    assert "inactive" in result["error"] and result["frame_id"] == ""
    assert wise.transition(Transition.TRANSITION_ACTIVATE)
    wise.wait_for_state("active", timeout=60)
    assert_still_serving(wise, "reactivate")


def test_activation_warms_the_models_up(nodes):
    """segment.yaml's warmup: one synthetic request on activate, before the first command."""
    *_, logs = nodes
    log = (logs / "wise.log").read_text()
    assert "warm-up request served in" in log
    assert log.index("warm-up request served in") < log.index("active: models loaded")


def test_activation_logs_what_was_loaded(nodes, taught_policy_dir, tiny_sam2_dir):
    *_, logs = nodes
    loaded = next(x for x in (logs / "wise.log").read_text().splitlines() if "loaded: " in x)
    assert f"policy={taught_policy_dir}" in loaded and f"segmenter={tiny_sam2_dir}" in loaded
    assert "device=cpu" in loaded and "dtype=float32" in loaded and "mode=wise_s" in loaded


def test_bench_node_runs_once():
    """The overhead benchmark (stub pipeline, its own node process and DDS domain) runs."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wise_dev.bench_node",
            "--repeats",
            "1",
            "--domain-id",
            str(DOMAIN_ID + 50),
            "--stream-seconds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "640x480" in proc.stdout and "1280x720" in proc.stdout
    # the image QoS stream measurement, one row per reliability
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert {r[0] for r in rows if r} >= {"best_effort", "reliable"}
