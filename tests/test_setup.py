"""The README's set-up commands on a stock distribution Python, and on a machine with ROS 2.

`make` must never install into the system interpreter (PEP 668: Debian's and Ubuntu's refuse
it), and on a machine with a sourced ROS 2 the venv must be made from ROS's own interpreter
with the distribution's packages visible, or rclpy (a C extension of that Python) won't import.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _make(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_makefile(tmp_path: Path) -> Path:
    work = tmp_path / "checkout"
    work.mkdir()
    shutil.copy(ROOT / "Makefile", work / "Makefile")
    return work


def _stock_env(extra_path: Path | None = None) -> dict[str, str]:
    """An environment without pyenv's shims or a venv: what a user of the distribution has."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "ROS_DISTRO")}
    path = ["/usr/local/bin", "/usr/bin", "/bin"]
    env["PATH"] = os.pathsep.join(([str(extra_path)] if extra_path else []) + path)
    return env


def _fake_ros(tmp_path: Path) -> Path:
    """A `ros2` on PATH, as `source /opt/ros/<distro>/setup.bash` gives (no ROS here)."""
    bin_dir = tmp_path / "ros_bin"
    bin_dir.mkdir()
    ros2 = bin_dir / "ros2"
    ros2.write_text("#!/bin/sh\nexit 0\n")
    ros2.chmod(ros2.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no distribution Python at /usr/bin/python3")
def test_bootstrap_uses_no_system_pip(tmp_path: Path) -> None:
    """`make` gets uv into its own venv: it works with Debian's externally managed Python."""
    work = _copy_makefile(tmp_path)
    result = _make(work, "uv", "PYTHON=/usr/bin/python3", env=_stock_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "externally-managed-environment" not in result.stderr
    version = subprocess.run(
        [str(work / ".build/uv/bin/uv"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("uv 0.13.8")
    # Made with the interpreter asked for, not pyenv's.
    cfg = (work / ".build/uv/pyvenv.cfg").read_text()
    assert "/usr/bin" in cfg


def _venv_with(tmp_path: Path, env: dict[str, str]) -> Path:
    work = _copy_makefile(tmp_path)
    uv_home = ROOT / ".build" / "uv"
    if not (uv_home / "bin" / "uv").exists():
        pytest.skip("make's bootstrapped uv is not built (run through `make test`)")
    # The repository's bootstrapped uv is reused (UV_HOME) so this test needs no download.
    result = _make(work, "venv", f"UV_HOME={uv_home}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / ".venv"


def test_ros_machine_venv_uses_ros_python_and_its_packages(tmp_path: Path) -> None:
    env = _stock_env(_fake_ros(tmp_path)) | {"ROS_DISTRO": "jazzy"}
    venv = _venv_with(tmp_path, env)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    # The python3 that ROS's PATH gives (here the distribution's), not a uv-chosen 3.11.
    ros_python = shutil.which("python3", path=env["PATH"])
    assert (venv / ".made-with").read_text().split() == [ros_python, "--system-site-packages"]
    assert f"home = {Path(ros_python).parent}" in cfg
    # The node's run recipe then uses ROS's rclpy: no ROS wheels are installed.
    dry = _make(venv.parent, "-n", "run", env=env)
    assert "ROS 2 jazzy found" in dry.stdout and "[ros-wheels]" not in dry.stdout


def test_plain_machine_venv_is_isolated_and_gets_the_ros_wheels(tmp_path: Path) -> None:
    venv = _venv_with(tmp_path, _stock_env())
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    # Python 3.11 whatever python3 is: the ROS 2 wheels on PyPI are cp311.
    assert (venv / ".made-with").read_text().split() == ["3.11"]
    assert "version_info = 3.11." in cfg
    dry = _make(venv.parent, "-n", "run", env=_stock_env())
    assert "[ros-wheels]" in dry.stdout and "found" not in dry.stdout


def test_run_takes_the_model_and_image_topic_from_the_command_line(tmp_path: Path) -> None:
    work = _copy_makefile(tmp_path)
    dry = _make(
        work,
        "-n",
        "run",
        "MODEL=/models/wise-7b-s",
        "IMAGE_TOPIC=/camera/color/image_raw",
        env=_stock_env(),
    )
    assert "-p policy_model:=/models/wise-7b-s" in dry.stdout
    assert "-r image:=/camera/color/image_raw" in dry.stdout
    plain = _make(work, "-n", "run", env=_stock_env())
    assert "policy_model:=" not in plain.stdout and "image:=" not in plain.stdout
