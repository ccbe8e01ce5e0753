"""The node's model factory: empty parameters defer to an exported checkpoint's manifest."""

import shutil

import rclpy
from rclpy.lifecycle import TransitionCallbackReturn

from wise_perception.bench_node import StubPipeline
from wise_perception.core.manifest import Manifest, write_manifest
from wise_perception.node import PARAMETERS, Settings, WisePerceptionNode, load_pipeline


def settings(**values):
    return Settings({**{p.name: p.default for p in PARAMETERS}, **values})


def test_empty_mode_and_brevity_take_the_manifest(taught_policy_dir, tiny_sam2_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(taught_policy_dir, export)
    write_manifest(
        export,
        Manifest(prompt_mode="wise", brevity=None, segmenter=str(tiny_sam2_dir), max_new_tokens=77),
    )
    pipeline = load_pipeline(settings(policy_model=str(export), device="cpu", dtype="float32"))
    try:
        assert pipeline.config.mode == "wise"
        assert pipeline.config.max_new_tokens == 77
    finally:
        pipeline.close()
    explicit = load_pipeline(
        settings(policy_model=str(export), device="cpu", dtype="float32", mode="seg_zero")
    )
    try:
        assert explicit.config.mode == "seg_zero"  # an explicit parameter wins
    finally:
        explicit.close()


def test_compile_parameter_reaches_the_policy(tiny_policy_dir, tiny_sam2_dir, caplog):
    params = settings(policy_model=str(tiny_policy_dir), segmenter_model=str(tiny_sam2_dir))
    with caplog.at_level("WARNING"):
        pipeline = load_pipeline(Settings({**params.values, "device": "cpu", "compile": True}))
    try:
        # On this CPU-only machine the policy turns it down, and says so.
        assert pipeline.policy.compile is False and "needs a CUDA device" in caplog.text
    finally:
        pipeline.close()


class _WarmupFails(StubPipeline):
    closed = False

    def warmup(self) -> float:
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
