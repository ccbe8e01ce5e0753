"""Starting the node by hand: ``--help``, ``make help``, and ``make run`` when the models cannot
load (offline, an uncached hub id): it exits with status 1 and says why once.

``make run`` itself also installs the environment; the test runs the node command line that
``make -n run`` prints (the recipe's own text, with its variables), as a real process over DDS.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra or a ROS 2 install)")

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
DOMAIN_ID = 151 + os.getpid() % 40  # test_node_startup.py uses 101..150
EXIT_S = 120.0  # bound on start, failed load and exit (generous: a loaded 2-core host)


def _make(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "wise-perception-node"), "--help"],
        [sys.executable, "-m", "wise_perception.node", "-h"],
    ],
    ids=["console-script", "module"],
)
def test_help_prints_usage_and_exits_without_starting_the_node(command):
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("usage: wise-perception-node")
    assert "ros2 launch wise_perception segment.launch.py" in out
    for topic in ("image ", "command ", "result ", "mask ", "/diagnostics "):
        assert topic in out
    for parameter in ("policy_model", "segmenter_model", "image_reliability", "autostart"):
        assert f"\n  {parameter} = " in out
    assert "[INFO]" not in out + done.stderr  # no node was started


def test_make_help_lists_every_target():
    phony = re.search(r"^\.PHONY: (.*)$", (REPO / "Makefile").read_text(), re.M)
    assert phony is not None
    listed = {line.split()[0] for line in _make("help").splitlines() if line.strip()}
    assert listed == set(phony.group(1).split())
    assert _make() == _make("help")  # the default goal


def test_make_run_offline_exits_once_with_the_reason(tiny_sam2_dir, tmp_path):
    printed = _make(
        "-n",
        "run",
        "MODEL=wise-org/not-a-cached-model",
        f"SEGMENTER={tiny_sam2_dir}",
        "IMAGE_TOPIC=/camera/color/image_raw",
    )
    lines = printed.splitlines()
    first = next(i for i, line in enumerate(lines) if "-m wise_perception.node" in line)
    last = first
    while lines[last].endswith("\\"):
        last += 1
    recipe = "\n".join(lines[first : last + 1])
    assert f"-p segmenter_model:={tiny_sam2_dir}" in recipe
    assert "-r image:=/camera/color/image_raw" in recipe
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": str(DOMAIN_ID),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "HF_HUB_OFFLINE": "1",  # a robot without network
    }
    done = subprocess.run(
        ["bash", "-c", recipe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_S,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert out.count("is a Hugging Face hub id") == 1, out  # the reason, once
    assert "Set the node parameter 'policy_model'" in out and "make run MODEL=" in out
    assert "exiting with status 1" in out
