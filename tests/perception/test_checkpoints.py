"""Checkpoint resolution: what is missing is said at once, with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from wise_perception import cli
from wise_perception.pipeline import WisePipeline
from wise_perception.sources import CheckpointUnavailable, check_reachable, is_hub_id


def test_an_uncached_hub_id_offline_says_what_to_do(tiny_sam2_dir: Path) -> None:
    # The tests run with HF_HUB_OFFLINE=1 (tests/conftest.py), as a robot without network.
    with pytest.raises(CheckpointUnavailable) as info:
        WisePipeline.from_pretrained("wise-org/not-a-cached-model", tiny_sam2_dir, device="cpu")
    message = str(info.value)
    assert info.value.role == "policy" and "'wise-org/not-a-cached-model'" in message
    assert "make demo" in message
    # The pipeline does not know what its caller calls the setting: it names none.
    assert "policy_model" not in message and "--model" not in message
    with pytest.raises(CheckpointUnavailable) as info:
        check_reachable("facebook/not-a-cached-sam2", "segmenter")
    assert info.value.role == "segmenter"
    assert "Set --segmenter to a local" in str(info.value.naming("--segmenter"))


def test_the_cli_hint_names_its_flag(tiny_checkpoints, capsys) -> None:
    code = cli.main(
        [str(tiny_checkpoints.demo_image), "the cup", "--model", "wise-org/not-a-cached-model"]
    )
    assert code == 3
    err = capsys.readouterr().err
    assert "Set --model to a local checkpoint folder" in err
    assert "policy_model" not in err and "make run" not in err


def test_local_folders_and_urls_are_not_hub_ids(tmp_path: Path) -> None:
    assert is_hub_id("Qwen/Qwen2.5-VL-7B-Instruct")
    assert not is_hub_id(str(tmp_path))
    assert not is_hub_id("./models/wise")
    assert not is_hub_id("http://gpu-server:8000/v1")
    check_reachable(str(tmp_path), "policy")  # local: its loader decides
