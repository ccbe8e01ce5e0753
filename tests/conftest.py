"""Shared fixtures: tiny offline checkpoints, and an environment that never leaves the machine."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable

# No model hub is reachable here or in CI: fail fast instead of retrying downloads.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# ROS 2 (Kilted) discovery stays on loopback unless the caller chose otherwise.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from pathlib import Path

import pytest

from wise_dev.teach import TAUGHT_COMPLETION, TAUGHT_MULTI_COMPLETION
from wise_dev.tiny_models import TinyCheckpoints, build_tiny_checkpoints, tiny_sam2_video


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    """Tiny random Qwen2.5-VL + SAM2 folders and a demo image, built once per session.

    Set ``WISE_TINY_CACHE=/some/dir`` to build them there once and reuse them across sessions.
    """
    cache = os.environ.get("WISE_TINY_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("tiny_models")
    return build_tiny_checkpoints(root)


@pytest.fixture(scope="session")
def tiny_policy_dir(tiny_checkpoints: TinyCheckpoints) -> Path:
    return tiny_checkpoints.policy


@pytest.fixture(scope="session")
def tiny_sam2_dir(tiny_checkpoints: TinyCheckpoints) -> Path:
    return tiny_checkpoints.sam2


@pytest.fixture(scope="session")
def tiny_sam2_video_dir(tiny_checkpoints: TinyCheckpoints) -> Path:
    """A tiny random SAM2 with its video memory (``Sam2VideoModel``): segmenter and tracker."""
    return tiny_sam2_video(tiny_checkpoints.root)


# Taught tiny policies kept in the repository: teaching is float arithmetic whose result
# differs between CPUs, so the tests load weights taught once, to a verified wide margin.
FIXTURE_POLICIES = Path(__file__).parent / "fixtures" / "policies"


@pytest.fixture(scope="session")
def teach_tiny(
    tiny_checkpoints: TinyCheckpoints, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``teach_tiny(completion)`` -> a tiny policy that greedily emits ``completion`` to anything.

    The committed fixture ``tests/fixtures/policies/taught_<hash>`` when there is one (make one
    with ``python -m wise_dev.teach --base <tiny policy> --fixture-dir
    tests/fixtures/policies --completion ...``); otherwise taught here once per session (or
    once per ``WISE_TINY_CACHE``), verified to the same margin.
    """
    from wise_dev import teach

    base = tiny_checkpoints.policy
    cache = os.environ.get("WISE_TINY_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("taught")

    def build(completion: str) -> Path:
        fixture = FIXTURE_POLICIES / teach.fixture_name(completion)
        if teach.taught_completion(fixture) == completion:
            return fixture
        key = Path(teach.__file__).read_bytes() + (base / "model.safetensors").read_bytes()
        out = root / f"taught_{hashlib.sha256(key + completion.encode()).hexdigest()[:16]}"
        if teach.taught_completion(out) != completion:
            if out.exists():
                shutil.rmtree(out)
            teach.teach_policy(base, out, completion)
        return out

    return build


@pytest.fixture(scope="session")
def taught_policy_dir(teach_tiny: Callable[[str], Path]) -> Path:
    """Tiny Qwen2.5-VL taught to answer ``TAUGHT_COMPLETION`` to everything (greedy)."""
    return teach_tiny(TAUGHT_COMPLETION)


@pytest.fixture(scope="session")
def taught_multi_policy_dir(teach_tiny: Callable[[str], Path]) -> Path:
    """Tiny Qwen2.5-VL taught to answer the two-object ``TAUGHT_MULTI_COMPLETION``."""
    return teach_tiny(TAUGHT_MULTI_COMPLETION)
