"""ros2_ws/ builds wise_perception as an ament_python package with colcon.

This is the layout `ros2 launch wise_perception segment.launch.py` and `ros2 run` rely on:
the ament index marker, package.xml, the launch file and parameters under
share/wise_perception, and the executables under lib/wise_perception.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _colcon(verb: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`colcon <verb>` of ros2_ws/src with its build, install and log folders under ``out``."""
    colcon = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    if not Path(colcon).exists():
        pytest.skip("colcon is not installed (requirements-test.txt installs it)")
    base = ["--base-paths", str(REPO / "ros2_ws" / "src"), "--build-base", str(out / "build")]
    proc = subprocess.run(
        [
            colcon,
            "--log-base",
            str(out / "log"),
            verb,
            *base,
            "--install-base",
            str(out / "install"),
            *extra,
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def install_base(tmp_path_factory):
    out = tmp_path_factory.mktemp("colcon")
    _colcon("build", out)
    return out / "install" / "wise_perception"


def test_colcon_test_runs_the_package_tests(install_base):
    """`colcon test` runs wise_perception/test/ with pytest (the `test` extra names it)."""
    out = install_base.parents[1]
    _colcon("test", out, "--event-handlers", "console_direct+")
    results = (out / "build" / "wise_perception" / "pytest.xml").read_text()
    assert 'tests="5"' in results and 'failures="0"' in results and 'errors="0"' in results


def test_ament_layout(install_base):
    share = install_base / "share" / "wise_perception"
    assert (install_base / "share/ament_index/resource_index/packages/wise_perception").is_file()
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "segment.launch.py").is_file()
    assert (share / "config" / "segment.yaml").is_file()
    assert (install_base / "lib" / "wise_perception" / "wise-perception-node").is_file()


def test_installed_package_is_importable(install_base):
    site = next((install_base / "lib").glob("python3*/site-packages"))
    assert (site / "wise_perception" / "core" / "prompts.py").is_file()
    assert (site / "wise_perception" / "node" / "lifecycle.py").is_file()
    assert (site / "wise_perception" / "policy" / "transformers" / "engine.py").is_file()
