"""Shared fixtures: tiny offline checkpoints, and an environment that never leaves the machine."""

from __future__ import annotations

import os

# No model hub is reachable here or in CI: fail fast instead of retrying downloads.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# ROS 2 (Kilted) discovery stays on loopback unless the caller chose otherwise.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from pathlib import Path

import pytest

from wise_perception.testing.tiny_models import TinyCheckpoints, build_tiny_checkpoints


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
