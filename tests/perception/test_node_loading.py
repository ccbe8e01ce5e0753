"""The node's model factory: empty parameters defer to an exported checkpoint's manifest, and
the node's input limits are the pipeline's."""

import shutil
from dataclasses import replace

import numpy as np
import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn

from wise_dev.stub_node import StubPipeline
from wise_perception.core.manifest import Manifest, write_manifest
from wise_perception.node.lifecycle import WisePerceptionNode
from wise_perception.node.models import load as load_pipeline
from wise_perception.node.settings import Settings
from wise_perception.policy.vllm_client import PolicyUnavailableError
from wise_perception.result import Result, Status
from wise_perception.sources import CheckpointUnavailable


def test_empty_mode_and_brevity_take_the_manifest(taught_policy_dir, tiny_sam2_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(taught_policy_dir, export)
    write_manifest(
        export,
        Manifest(prompt_mode="wise", brevity=None, segmenter=str(tiny_sam2_dir), max_new_tokens=77),
    )
    pipeline = load_pipeline(Settings(policy_model=str(export), device="cpu", dtype="float32"))
    try:
        assert pipeline.config.mode == "wise"
        assert pipeline.config.max_new_tokens == 77
    finally:
        pipeline.close()
    explicit = load_pipeline(
        Settings(policy_model=str(export), device="cpu", dtype="float32", mode="seg_zero")
    )
    try:
        assert explicit.config.mode == "seg_zero"  # an explicit parameter wins
    finally:
        explicit.close()


def test_an_uncached_hub_id_names_the_node_parameter_to_set(tiny_sam2_dir):
    """Offline (tests/conftest.py), the node's hint names its parameter and the make variable."""
    for settings, parameter, variable in (
        (Settings(policy_model="wise-org/not-cached", segmenter_model=str(tiny_sam2_dir)),
         "'policy_model'", "MODEL="),
        (Settings(policy_model=str(tiny_sam2_dir), segmenter_model="facebook/not-cached"),
         "'segmenter_model'", "SEGMENTER="),
    ):  # fmt: skip
        with pytest.raises(CheckpointUnavailable) as info:
            load_pipeline(settings)
        message = str(info.value)
        assert f"Set the node parameter {parameter}" in message
        assert f"make run {variable}" in message and "--model" not in message


def test_the_nodes_limits_are_the_pipelines(taught_policy_dir, tiny_sam2_dir):
    """A command or image the node accepts is not rejected by the pipeline's own defaults."""
    pipeline = load_pipeline(
        Settings(
            policy_model=str(taught_policy_dir),
            segmenter_model=str(tiny_sam2_dir),
            device="cpu",
            dtype="float32",
            max_new_tokens=8,
            max_command_chars=2000,
            max_image_pixels=0,  # no limit
        )
    )
    try:
        assert (pipeline.config.max_command_chars, pipeline.config.max_image_pixels) == (2000, 0)
        small = np.zeros((32, 32, 3), np.uint8)
        result = pipeline.segment(small, "the cup " * 150)  # 1,199 characters
        assert result.status.value != "invalid_command", result.error
        big = np.zeros((4100, 4100, 3), np.uint8)  # over the pipeline's default 4096^2
        result = pipeline.segment(big, "the cup")
        assert result.status.value != "invalid_image", result.error
    finally:
        pipeline.close()


def test_compile_parameter_reaches_the_policy(tiny_policy_dir, tiny_sam2_dir, caplog):
    params = Settings(policy_model=str(tiny_policy_dir), segmenter_model=str(tiny_sam2_dir))
    with caplog.at_level("WARNING"):
        pipeline = load_pipeline(replace(params, device="cpu", compile=True))
    try:
        # On this CPU-only machine the policy turns it down, and says so.
        assert pipeline.policy.compile is False and "needs a CUDA device" in caplog.text
    finally:
        pipeline.close()


def test_engine_parameters_reach_the_policy(tiny_policy_dir, tiny_sam2_dir):
    """forced_schema (default on) and int8_decode (default off) reach the transformers engine."""
    params = Settings(
        policy_model=str(tiny_policy_dir), segmenter_model=str(tiny_sam2_dir), device="cpu"
    )
    for settings, schema, int8 in (
        (params, True, False),
        (replace(params, forced_schema=False, int8_decode=True), False, True),
    ):
        pipeline = load_pipeline(settings)
        try:
            assert (pipeline.policy.forced_schema, pipeline.policy.int8_decode) == (schema, int8)
        finally:
            pipeline.close()


class _WarmupFails(StubPipeline):
    closed = False

    def warmup(self) -> Result:
        raise RuntimeError("no GPU memory left for the warm-up")

    def close(self) -> None:
        self.closed = True


def test_a_failed_warmup_still_activates_the_node():
    """Warm-up costs speed, not service: the node logs it and serves (stub models, in process)."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=77)
    stub = _WarmupFails()
    node = WisePerceptionNode(pipeline_factory=lambda _settings: stub, context=context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node._pipeline is stub and not stub.closed
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert stub.closed


class _ServerDown(StubPipeline):
    """What a vLLM server policy whose server is down looks like to the node: describing it
    asks the server (``VllmServerPolicy.model``) and raises; each request is answered
    policy_unavailable."""

    closed = False

    def describe(self):
        raise PolicyUnavailableError("policy server unreachable: http://127.0.0.1:9/v1/models")

    def warmup(self) -> Result:
        return Result.failure("warm-up", Status.POLICY_UNAVAILABLE, "policy server unreachable")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def in_process_node():
    """``make(pipeline)``: a node in this process whose models are ``pipeline`` (stub models)."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=79)
    made = []

    def make(pipeline) -> WisePerceptionNode:
        made.append(WisePerceptionNode(pipeline_factory=lambda _s: pipeline, context=context))
        return made[-1]

    yield make
    for node in made:
        node.close()
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_a_policy_that_cannot_be_described_or_reached_still_activates(in_process_node):
    stub = _ServerDown()
    node = in_process_node(stub)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node._pipeline is stub and not stub.closed
    health = node._state.health()
    assert health.level == "warn" and "policy unavailable: policy server unreachable" in (
        health.message
    )


def test_a_failure_after_the_load_closes_what_was_loaded(in_process_node, monkeypatch):
    """Whatever fails after the models loaded (here the image subscription), they are closed,
    and the reason is what every command's not_ready says."""
    stub = _WarmupFails()
    node = in_process_node(stub)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS

    def no_subscription():
        raise RuntimeError("the middleware refused the image subscription")

    monkeypatch.setattr(node, "_subscribe_images", no_subscription)
    assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
    assert stub.closed and node._pipeline is None
    assert node._state.label == "inactive"
    reason = node._state.not_ready_reason()
    assert "last activate failed: RuntimeError: the middleware refused" in reason
    assert node._state.health().level == "error"
