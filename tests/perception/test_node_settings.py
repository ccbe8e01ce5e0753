"""The node's parameter table: declared with descriptors, read into typed, checked settings."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="needs rclpy (the ros-wheels extra or a ROS 2 install)")

import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from wise_dev.stub_node import StubPipeline
from wise_perception.node.lifecycle import WisePerceptionNode
from wise_perception.node.settings import PARAMETERS, Settings, descriptor

pytestmark = pytest.mark.ros

# A change to any of these needs the models reloaded or the topics rebuilt.
RELOADED = {
    "policy_model", "segmenter_model", "device", "dtype", "mode", "brevity", "max_new_tokens",
    "compile", "image_reliability", "image_history", "image_depth", "image_durability",
    "command_depth", "result_depth", "output_depth", "queue_size", "use_overlay",
    "max_image_pixels", "max_command_chars",
}  # fmt: skip


def test_every_parameter_is_described_and_bounded_where_it_has_bounds():
    described = {p.name: descriptor(p) for p in PARAMETERS}
    assert all(d.description for d in described.values())
    assert {name for name, d in described.items() if d.read_only} >= RELOADED
    assert not described["max_image_age_s"].read_only  # read again on every configure
    (depth,) = described["image_depth"].integer_range
    assert (depth.from_value, depth.step) == (1, 1)
    (age,) = described["max_image_age_s"].floating_point_range
    assert age.from_value == 0.0 and age.to_value >= 60.0
    assert "best_effort" in described["image_reliability"].additional_constraints
    assert described["encode_ahead"].additional_constraints == "one of: auto, true, false"
    assert described["encode_ahead"].dynamic_typing  # `encode_ahead:=true` arrives as a bool


def test_settings_are_checked_in_one_place_and_every_problem_is_named():
    with pytest.raises(ValueError) as info:
        Settings(
            image_depth=0,
            image_reliability="sometimes",
            mode="fast",
            policy_model=" ",
            max_image_age_s=1,  # an int where ROS declared a double
        )
    message = str(info.value)
    for needle in (
        "image_depth=0 is outside [1, 1000]",
        "image_reliability='sometimes' is not one of 'auto', 'reliable', 'best_effort'",
        "mode='fast' is not one of",
        "policy_model must name",
        "max_image_age_s must be a float, got 1",
    ):
        assert needle in message


def test_parameter_values_are_read_into_typed_settings():
    values = {p.name: p.default for p in PARAMETERS}
    values.update(image_reliability=" Best_Effort ", encode_ahead=True, queue_size=7)
    settings = Settings.from_parameters(values)
    assert (settings.image_reliability, settings.encode_ahead) == ("best_effort", "true")
    assert settings.queue_size == 7 and settings.image_qos().depth == 1
    assert Settings.from_parameters({p.name: p.default for p in PARAMETERS}) == Settings()


@pytest.fixture
def node_context():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=78)
    made = []

    def make(**overrides):
        node = WisePerceptionNode(
            pipeline_factory=lambda _settings: StubPipeline(),
            context=context,
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        )
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_ros_describes_the_parameters_and_refuses_read_only_and_out_of_range_changes(
    node_context,
):
    node = node_context()
    (described,) = node.describe_parameters(["policy_model"])
    assert described.read_only and "policy checkpoint" in described.description
    (refused,) = node.set_parameters([Parameter("policy_model", value="other")])
    assert not refused.successful and "read-only" in refused.reason
    (refused,) = node.set_parameters([Parameter("max_image_age_s", value=-1.0)])
    assert not refused.successful
    (accepted,) = node.set_parameters([Parameter("max_image_age_s", value=5.0)])
    assert accepted.successful
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.settings is not None and node.settings.max_image_age_s == 5.0


def test_configure_fails_on_invalid_settings(node_context):
    node = node_context(image_history="keep_some", policy_model="")
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.settings is None


def test_image_qos_auto_takes_what_every_publisher_can_send_and_names_what_cannot_arrive():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from wise_perception.node.image_qos import choose_reliability, mismatch

    reliable_cam = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    lossy_cam = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    assert choose_reliability("auto", []) == ReliabilityPolicy.RELIABLE  # none yet
    assert choose_reliability("auto", [reliable_cam]) == ReliabilityPolicy.RELIABLE
    assert choose_reliability("auto", [reliable_cam, lossy_cam]) == ReliabilityPolicy.BEST_EFFORT
    assert choose_reliability("reliable", [lossy_cam]) == ReliabilityPolicy.RELIABLE  # kept
    latched = QoSProfile(
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    named = mismatch(latched, [lossy_cam, reliable_cam], "/cam")
    assert named.startswith("QoS mismatch: 1 publisher(s) on /cam offer only best_effort")
    assert "2 publisher(s) on /cam offer only volatile durability" in named
    assert "set image_durability: volatile" in named
    assert mismatch(lossy_cam, [lossy_cam, reliable_cam], "/cam") == ""
