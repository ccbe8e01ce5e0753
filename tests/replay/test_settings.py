"""A replay decides with the node's parameters: the node's defaults, its parameters file."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from wise_perception.replay.settings import ReplaySettings, read_params_file

CONFIG = Path(__file__).resolve().parents[2] / "wise_perception" / "config" / "segment.yaml"


@pytest.mark.ros
def test_the_defaults_are_the_nodes():
    pytest.importorskip("rclpy", reason="the node's parameter table imports rclpy")
    from wise_perception.node.settings import Settings

    node = Settings()
    for f in fields(ReplaySettings):
        assert getattr(ReplaySettings(), f.name) == getattr(node, f.name), f.name


def test_the_nodes_parameters_file_is_read(tmp_path):
    shipped = ReplaySettings().with_values(read_params_file(CONFIG))
    assert shipped.max_image_age_s == 1.0 and shipped.queue_size == 4
    robot = tmp_path / "robot.yaml"
    robot.write_text(
        "wise_perception:\n  ros__parameters:\n"
        "    max_image_age_s: 2\n    command_wait_s: 0.5\n    image_depth: 5\n"
        "    policy_model: /models/wise_export\n"
    )
    settings = ReplaySettings().with_values(read_params_file(robot))
    assert settings.max_image_age_s == 2 and settings.command_wait_s == 0.5  # int or float
    assert settings.policy_model == "/models/wise_export"  # image_depth: not the replay's
    many = tmp_path / "many.yaml"
    many.write_text("a:\n  ros__parameters: {}\nb:\n  ros__parameters: {}\n")
    with pytest.raises(ValueError, match="expected one node entry"):
        read_params_file(many)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="queue_size=0 is outside") as error:
        ReplaySettings(queue_size=0, mode="fast", command_wait_s=1)
    assert "mode='fast' is not a prompt mode" in str(error.value)
    with pytest.raises(ValueError, match="max_image_age_s must be a float, got True"):
        ReplaySettings(max_image_age_s=True)
