"""Fixtures of the pipeline, CLI and backend tests: taught tiny policies and loaded pipelines.

The taught policies themselves are shared fixtures of the top-level ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def taught_pipeline(taught_policy_dir: Path, tiny_sam2_dir: Path):
    """The real pipeline (taught tiny policy + tiny SAM2 on CPU), loaded once."""
    from wise_perception.pipeline import WisePipeline

    pipeline = WisePipeline.from_pretrained(
        taught_policy_dir, tiny_sam2_dir, device="cpu", dtype="float32", max_new_tokens=96
    )
    yield pipeline
    pipeline.close()


@pytest.fixture(scope="session")
def random_pipeline(tiny_policy_dir: Path, tiny_sam2_dir: Path):
    """The real pipeline with the untaught (random, junk-writing) tiny policy."""
    from wise_perception.pipeline import WisePipeline

    pipeline = WisePipeline.from_pretrained(
        tiny_policy_dir, tiny_sam2_dir, device="cpu", dtype="float32", max_new_tokens=24
    )
    yield pipeline
    pipeline.close()
