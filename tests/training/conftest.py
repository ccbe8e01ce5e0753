"""Fixtures of the training, evaluation and export tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.eval_data import TAUGHT_COMPLETION


@pytest.fixture(scope="session")
def eval_taught_policy_dir(teach_tiny: Callable[[str], Path]) -> Path:
    """The tiny policy taught to emit evaluation's centred answer (built once per session)."""
    return teach_tiny(TAUGHT_COMPLETION)
