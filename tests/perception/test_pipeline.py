"""WisePipeline end to end with real tiny models: the taught policy (fixed answer) + tiny SAM2."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from wise_perception.backend_info import BackendInfo
from wise_perception.core import prompts
from wise_perception.core.answer import FailureReason
from wise_perception.core.limits import CheckedImage
from wise_perception.core.manifest import Manifest, ManifestError, write_manifest
from wise_perception.pipeline import PipelineConfig, SettingsError, WisePipeline
from wise_perception.policy.base import PolicyBackend, PolicyOutput
from wise_perception.result import Status, mask_union

THINK = " the red square is on the left "  # the taught <think> text, unstripped


def _image(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _map(value: float, extent: int) -> int:
    """The released mapping, by hand: round(x * extent / 840), clipped to the image."""
    return min(max(round(value * extent / 840), 0), extent - 1)


def test_ok_path_maps_the_answer_back_to_original_pixels(taught_pipeline) -> None:
    width, height = 640, 480
    result = taught_pipeline.segment(_image(width, height, 0), "The red square.")
    assert result.status is Status.OK, result.error
    assert result.command == "The red square."
    assert result.image_size == (width, height)
    assert (
        result.mask is not None
        and result.mask.shape == (height, width)
        and result.mask.dtype == bool
    )
    assert len(result.objects) == 1
    obj = result.objects[0]
    assert obj.box == (_map(100, width), _map(200, height), _map(400, width), _map(500, height))
    assert obj.box == (76, 114, 305, 286)  # 100*640/840 = 76.19, 500*480/840 = 285.7, ...
    assert obj.points == (
        (_map(200, width), _map(300, height)),
        (_map(300, width), _map(400, height)),
    )
    assert obj.mask is not None and np.array_equal(obj.mask, result.mask)
    assert isinstance(obj.score, float)
    assert result.rationale == THINK.strip()
    tokenizer = taught_pipeline.policy.tokenizer
    assert result.reasoning_tokens == len(tokenizer.encode(THINK, add_special_tokens=False)) > 0
    # wise_s stops right after </answer> (the stop string), before the end-of-turn token.
    assert result.completion.endswith("</answer>")
    assert result.generated_tokens == len(
        tokenizer.encode(result.completion, add_special_tokens=False)
    )
    assert result.mode == "wise_s"
    t = result.timings
    for stage in ("preprocess", "policy_prefill", "policy_decode", "segmenter_decode", "total"):
        assert getattr(t, stage) > 0, stage
    assert t.total >= t.policy_prefill + t.policy_decode
    data = result.to_dict()
    assert data["status"] == "ok" and data["mask_pixels"] == int(result.mask.sum())


@pytest.fixture
def encoded(taught_pipeline, monkeypatch) -> list[tuple[int, int]]:
    """The sizes of the images SAM2 encodes: a spy on the real encoder, not a mock model."""
    real_encode = taught_pipeline.segmenter.encode
    calls: list[tuple[int, int]] = []

    def counting_encode(image: np.ndarray):
        calls.append(image.shape[:2])
        return real_encode(image)

    monkeypatch.setattr(taught_pipeline.segmenter, "encode", counting_encode)
    return calls


def test_same_frame_is_encoded_once(taught_pipeline, encoded) -> None:
    calls = encoded
    frame = _image(320, 240, 1)
    first = taught_pipeline.segment(frame, "the red square", frame_key=("camera", 1))
    second = taught_pipeline.segment(frame, "the blue cup", frame_key=("camera", 1))
    assert first.ok and second.ok
    assert len(calls) == 1
    assert first.timings.segmenter_encode > 0 and second.timings.segmenter_encode == 0.0
    assert np.array_equal(first.mask, second.mask)
    # Default key: a hash of the pixels; an equal copy hits, a changed frame does not.
    other = _image(320, 240, 2)
    taught_pipeline.segment(other, "a")
    taught_pipeline.segment(other.copy(), "b")
    assert len(calls) == 2
    changed = other.copy()
    changed[0, 0, 0] ^= 1
    taught_pipeline.segment(changed, "c")
    assert len(calls) == 3
    # The cache is bounded.
    for seed in range(10, 10 + taught_pipeline.config.cache_size + 2):
        taught_pipeline.segment(_image(32, 24, seed), "x")
    info = taught_pipeline.cache_info()
    assert info["size"] == info["capacity"] == taught_pipeline.config.cache_size


def test_a_frame_encoded_ahead_is_encoded_once(taught_pipeline, encoded) -> None:
    """encode_ahead (the node, while idle) then segment on the same key: one encoding, and the
    command pays nothing for it."""
    calls = encoded
    frame = _image(320, 240, 21)
    before = taught_pipeline.cache_info()
    encoding = taught_pipeline.encode_ahead(CheckedImage(frame, 0), ("camera", "ahead"))
    assert encoding.result().seconds > 0 and calls == [(240, 320)]
    again = taught_pipeline.encode_ahead(frame, ("camera", "ahead"))  # in the cache: not again
    result = taught_pipeline.segment(frame, "the red square", frame_key=("camera", "ahead"))
    assert again is encoding and result.ok and len(calls) == 1
    assert result.timings.segmenter_encode == 0.0
    after = taught_pipeline.cache_info()
    assert (after["misses"], after["hits"]) == (before["misses"] + 1, before["hits"] + 2)
    with pytest.raises(ValueError, match="HxWx3"):  # an image it cannot serve is refused
        taught_pipeline.encode_ahead(np.zeros((4, 4), np.uint8), ("camera", "bad"))


def test_inputs_checked_where_they_came_in_are_not_checked_again(
    taught_pipeline, monkeypatch
) -> None:
    """The node and the CLI hand the pipeline a Question and a CheckedImage: served without a
    second check when checked within the pipeline's limits, checked when the limit was looser."""
    checks: list[str] = []
    normalize, image_problem = prompts.normalize_question, taught_pipeline._image_problem
    monkeypatch.setattr(
        prompts, "normalize_question", lambda q, n: checks.append("command") or normalize(q, n)
    )
    monkeypatch.setattr(
        taught_pipeline, "_image_problem", lambda i: checks.append("image") or image_problem(i)
    )
    limit = taught_pipeline.config.max_image_pixels
    question = prompts.Question("The red square.", "the red square", 1000)
    image = CheckedImage(_image(64, 48, 22), limit)
    served = taught_pipeline.segment(image, question)
    assert served.ok and checks == []
    assert served.command == "The red square."  # the echo is the command as sent
    # checked against looser limits than the pipeline's: checked again, and refused
    loose_question = prompts.Question("x" * 1500, "x" * 1500, 2000)
    refused = taught_pipeline.segment(image, loose_question)
    assert refused.status is Status.INVALID_COMMAND and "the limit is 1000" in refused.error
    big = CheckedImage(np.zeros((4097, 4097, 3), np.uint8), 0)  # checked with no limit
    refused = taught_pipeline.segment(big, question)
    assert refused.status is Status.INVALID_IMAGE and "max_image_pixels" in refused.error
    assert checks == ["command", "image"]


def test_warmup_serves_one_request_and_leaves_the_cache_alone(taught_pipeline, monkeypatch) -> None:
    generate = taught_pipeline.policy.generate
    calls: list[int] = []

    def counting_generate(images, instructions, **kwargs):  # a spy on the real policy
        calls.append(len(images))
        return generate(images, instructions, **kwargs)

    monkeypatch.setattr(taught_pipeline.policy, "generate", counting_generate)
    before = taught_pipeline.cache_info()["size"]
    keys = taught_pipeline.encodings.keys()
    warm = taught_pipeline.warmup()
    assert warm.ok and warm.timings.total > 0 and calls == [1]
    assert (
        taught_pipeline.cache_info()["size"] == before and taught_pipeline.encodings.keys() == keys
    )
    assert taught_pipeline.segment(_image(64, 48, 3), "the red square").ok


def test_warmup_stays_within_a_small_image_limit(taught_pipeline) -> None:
    """A node with max_image_pixels below the policy frame (840^2) still warms the models up."""
    config = PipelineConfig(max_new_tokens=96, max_image_pixels=200 * 200)
    small = WisePipeline(
        taught_pipeline.policy, taught_pipeline.segmenter, config, owns_models=False
    )
    warm = small.warmup()
    assert warm.ok, warm.error
    assert warm.image_size == (200, 200)


def test_image_encoding_overlaps_policy_generation(taught_pipeline, monkeypatch) -> None:
    events: dict[str, float] = {}
    threads: dict[str, str] = {}
    segmenter, policy = taught_pipeline.segmenter, taught_pipeline.policy
    real_encode, real_generate = segmenter.encode, policy.generate

    def timed_encode(image):
        events["encode_start"] = time.perf_counter()
        threads["encode"] = threading.current_thread().name
        return real_encode(image)

    def timed_generate(images, instructions, **kwargs):
        events["generate_start"] = time.perf_counter()
        out = real_generate(images, instructions, **kwargs)
        events["generate_end"] = time.perf_counter()
        return out

    monkeypatch.setattr(segmenter, "encode", timed_encode)
    monkeypatch.setattr(policy, "generate", timed_generate)
    result = taught_pipeline.segment(_image(640, 480, 3), "the red square", frame_key="overlap")
    assert result.ok, result.error
    # The encoder started (on the worker thread) before the policy had finished.
    assert events["encode_start"] < events["generate_end"]
    assert threads["encode"] != threading.current_thread().name


BAD_COMMANDS = ["", "   ", None, 42, "x" * 1001]
BAD_IMAGES = {
    "float": np.zeros((8, 8, 3), dtype=np.float32),
    "gray": np.zeros((8, 8), dtype=np.uint8),
    "rgba": np.zeros((8, 8, 4), dtype=np.uint8),
    "zero-height": np.zeros((0, 8, 3), dtype=np.uint8),
    "zero-width": np.zeros((8, 0, 3), dtype=np.uint8),
    "list": [[[0, 0, 0]]],
    "none": None,
    "too-large": np.zeros((4097, 4097, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("command", BAD_COMMANDS, ids=["empty", "blank", "none", "int", "long"])
def test_bad_commands_are_reported(taught_pipeline, command) -> None:
    result = taught_pipeline.segment(_image(64, 48, 4), command)
    assert result.status is Status.INVALID_COMMAND and result.error


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_are_reported_and_the_pipeline_keeps_working(taught_pipeline, name) -> None:
    result = taught_pipeline.segment(BAD_IMAGES[name], "the red square")
    assert result.status is Status.INVALID_IMAGE and result.error
    assert taught_pipeline.segment(_image(64, 48, 5), "the red square").ok


def test_junk_from_the_random_policy_is_unparsable(random_pipeline) -> None:
    result = random_pipeline.segment(_image(320, 240, 6), "the red square")
    assert result.status is Status.UNPARSABLE_ANSWER
    assert result.error.split(":")[0] in {r.value for r in FailureReason}
    assert result.completion and result.generated_tokens > 0
    assert result.mask is not None and result.mask.shape == (240, 320) and not result.mask.any()
    assert result.objects == []
    assert random_pipeline.segment(_image(320, 240, 6), "again").status is Status.UNPARSABLE_ANSWER


class ScriptedPolicy(PolicyBackend):
    """Stand-in policy that writes given completions (with the real tiny tokenizer for #Tok)
    and records the prompt spec and stop strings of each request."""

    def __init__(self, texts: list[str], tokenizer) -> None:
        self.texts, self.tokenizer = texts, tokenizer
        self.requests: list[tuple[object, tuple[str, ...]]] = []

    def info(self) -> BackendInfo:
        return BackendInfo("scripted", "test")

    def generate(self, images, instructions, *, spec=None, stop=()):
        self.requests.append((spec, tuple(stop)))
        return [PolicyOutput(self.texts.pop(0), 7, 0.001, 0.002) for _ in images]


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("<think> the cup is red </think><answer>{not json}</answer>", FailureReason.BAD_JSON),
        (
            '<think> the cup is red </think><answer>{"bbox": [5,5,1,1], "points_1": [1,1], "points_2": [2,2]}</answer>',
            FailureReason.BAD_BOX,
        ),
        ("<think> the cup is red </think> no answer", FailureReason.NO_ANSWER),
    ],
)
def test_unparsable_answer_keeps_rationale_and_tok(taught_pipeline, completion, reason) -> None:
    tokenizer = taught_pipeline.policy.tokenizer
    pipeline = WisePipeline(
        ScriptedPolicy([completion], tokenizer),
        taught_pipeline.segmenter,
        PipelineConfig(),
        owns_models=False,  # the models are shared with the session's pipeline
    )
    try:
        result = pipeline.segment(_image(64, 48, 7), "the cup")
    finally:
        pipeline.close()
    assert result.status is Status.UNPARSABLE_ANSWER
    assert result.error.startswith(reason.value)
    assert result.rationale == "the cup is red"
    assert result.reasoning_tokens == len(
        tokenizer.encode(" the cup is red ", add_special_tokens=False)
    )


def test_policy_crash_is_an_internal_error(taught_pipeline, monkeypatch) -> None:
    def broken(images, instructions, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(taught_pipeline.policy, "generate", broken)
    result = taught_pipeline.segment(_image(64, 48, 8), "the red square")
    assert result.status is Status.INTERNAL_ERROR and "out of memory" in result.error
    monkeypatch.undo()
    assert taught_pipeline.segment(_image(64, 48, 8), "the red square").ok


def test_multi_object_answer_gives_union_and_per_object_results(
    taught_multi_policy_dir: Path, tiny_sam2_dir: Path
) -> None:
    width, height = 420, 280
    with WisePipeline.from_pretrained(
        taught_multi_policy_dir, tiny_sam2_dir, device="cpu", schema="multi", max_new_tokens=160
    ) as pipeline:
        assert pipeline.spec.schema.value == "multi"
        result = pipeline.segment(_image(width, height, 9), "both boxes")
    assert result.status is Status.OK, result.error
    assert [o.box for o in result.objects] == [
        (_map(10, width), _map(20, height), _map(300, width), _map(400, height)),
        (_map(500, width), _map(560, height), _map(780, width), _map(800, height)),
    ]
    assert [o.points for o in result.objects] == [
        ((_map(150, width), _map(210, height)),),
        ((_map(640, width), _map(690, height)),),
    ]
    union = result.objects[0].mask | result.objects[1].mask
    assert np.array_equal(result.mask, union) and result.mask.shape == (height, width)
    assert result.rationale == "two boxes"


def test_batch_matches_single_requests(taught_pipeline) -> None:
    images = [_image(640, 480, 10), np.zeros((4, 4), dtype=np.uint8), _image(200, 300, 11)]
    commands = [
        "the red square",
        "the red square",
        "a much longer command about the cup near the robot",
    ]
    results = taught_pipeline.segment_batch(images, commands)
    assert [r.status for r in results] == [Status.OK, Status.INVALID_IMAGE, Status.OK]
    single = taught_pipeline.segment(images[2], commands[2])
    # Left padding: the shorter prompt in the batch decodes exactly as alone.
    assert results[0].completion == results[2].completion == single.completion
    assert (
        results[2].objects[0].box
        == single.objects[0].box
        == (_map(100, 200), _map(200, 300), _map(400, 200), _map(500, 300))
    )
    assert all(r.timings.total > 0 for r in results if r.ok)
    with pytest.raises(ValueError):
        taught_pipeline.segment_batch(images, commands[:2])


def test_manifest_folder_loads_with_no_other_settings(
    taught_policy_dir, tiny_sam2_dir, tmp_path
) -> None:
    folder = tmp_path / "wise-s-tiny"
    shutil.copytree(taught_policy_dir, folder)
    write_manifest(
        folder,
        Manifest(
            prompt_mode="wise",
            brevity=None,
            segmenter=str(tiny_sam2_dir),
            max_new_tokens=80,
            system_prompt="You segment for a robot.",
            files=("model.safetensors",),
        ),
    )
    with WisePipeline.from_pretrained(folder) as pipeline:
        assert pipeline.config.mode == "wise" and pipeline.config.max_new_tokens == 80
        assert pipeline.manifest is not None
        # The system turn the checkpoint was trained with reaches the policy's prompt.
        assert "You segment for a robot." in pipeline.policy.prompt_text("the cup")
        result = pipeline.segment(_image(100, 80, 12), "the red square")
    assert result.ok and result.mode == "wise", result.error
    # Explicit arguments override the manifest.
    with WisePipeline.from_pretrained(
        folder, mode="seg_zero", max_new_tokens=90, device="cpu"
    ) as pipeline:
        assert pipeline.config.mode == "seg_zero" and pipeline.config.max_new_tokens == 90
        assert pipeline.spec.think_word == ""  # Seg-Zero's prompt


def test_loading_errors_are_clear(tmp_path, tiny_sam2_dir) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint"):
        WisePipeline.from_pretrained(missing, tiny_sam2_dir)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "wise_manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        WisePipeline.from_pretrained(broken, tiny_sam2_dir)
    with pytest.raises(ValueError, match="brevity"):
        PipelineConfig(mode="wise_s", brevity="")


def test_closed_pipeline_answers_not_ready(tiny_policy_dir, tiny_sam2_dir) -> None:
    pipeline = WisePipeline.from_pretrained(
        tiny_policy_dir, tiny_sam2_dir, device="cpu", max_new_tokens=4
    )
    pipeline.close()
    pipeline.close()  # idempotent
    assert pipeline.segment(_image(64, 48, 13), "the red square").status is Status.NOT_READY


@pytest.mark.parametrize(("width", "height"), [(1, 1), (4, 4), (100, 1), (100, 3), (3, 100)])
def test_tiny_images_are_served(taught_pipeline, width, height) -> None:
    result = taught_pipeline.segment(_image(width, height, 9), "the red square")
    assert result.status is Status.OK, result.error
    assert result.mask.shape == (height, width)
    x1, y1, x2, y2 = result.objects[0].box
    assert 0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height


def test_limits_are_the_configured_ones_and_echoes_are_bounded(taught_pipeline) -> None:
    config = PipelineConfig(max_command_chars=2000, max_image_pixels=0)  # 0: no pixel limit
    pipeline = WisePipeline(
        taught_pipeline.policy, taught_pipeline.segmenter, config, owns_models=False
    )
    try:
        # One limit along the path: 1,200 characters pass a 2,000-character limit.
        # (The taught policy never saw such a prompt; what matters is that it was served.)
        served = pipeline.segment(_image(32, 32, 1), "the cup " * 150)
        assert served.status is not Status.INVALID_COMMAND, served.error
        assert served.generated_tokens > 0
        huge = pipeline.segment(_image(32, 32, 1), "x" * 1_000_000)
        assert huge.status is Status.INVALID_COMMAND and "the limit is 2000" in huge.error
        assert huge.image_size == (32, 32)
        assert len(huge.to_json()) < 2_000  # the 1 MB command is not echoed back
        big = np.zeros((4100, 4100, 3), np.uint8)
        assert pipeline._image_problem(big) == ""  # 0 means no limit, not the default 4096^2
    finally:
        pipeline.close()
    assert "exceeds max_image_pixels" in taught_pipeline._image_problem(big)


def test_an_unreachable_policy_has_its_own_status(taught_pipeline) -> None:
    from wise_perception.policy.base import PolicyUnavailable

    class DownServer(PolicyBackend):
        """Stands in for a policy server that is down (the real one is tested in engines)."""

        def info(self) -> BackendInfo:
            return BackendInfo("http://127.0.0.1:9", "vllm-server")

        def generate(self, images, instructions, *, spec=None, stop=()):
            raise PolicyUnavailable("policy server unreachable: connection refused")

    with WisePipeline(DownServer(), taught_pipeline.segmenter, owns_models=False) as pipeline:
        one = pipeline.segment(_image(32, 32, 1), "the cup")
        batch = pipeline.segment_batch([_image(32, 32, 1)] * 2, ["a", "b"])
    assert one.status is Status.POLICY_UNAVAILABLE and "unreachable" in one.error
    assert [r.status for r in batch] == [Status.POLICY_UNAVAILABLE] * 2


def test_settings_are_the_config_fields_and_a_typo_is_named(tiny_policy_dir, tiny_sam2_dir):
    """from_pretrained's keyword settings are PipelineConfig's fields (as a Hugging Face config's
    overrides); a misspelt one fails before anything loads, naming it and the valid ones."""
    with pytest.raises(TypeError, match=r"unknown pipeline settings \['cache_sise'\].*cache_size"):
        WisePipeline.from_pretrained(tiny_policy_dir, tiny_sam2_dir, cache_sise=3)
    with WisePipeline.from_pretrained(
        tiny_policy_dir, tiny_sam2_dir, device="cpu", cache_size=3, batch_size=2, brevity=""
    ) as pipeline:
        assert (pipeline.config.cache_size, pipeline.config.batch_size) == (3, 2)
        assert pipeline.config.brevity == PipelineConfig().brevity  # "" is "not given"


def test_a_results_mask_is_the_union_of_its_objects() -> None:
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[:2, :2], b[2:, 2:] = True, True
    assert mask_union([a, b], (4, 4)).sum() == 8
    assert not mask_union([], (4, 4)).any()


# ---------------------------------------------------------------------- the prompt mode per request

TAUGHT = (
    "<think> the red square is on the left </think><answer>"
    '{"bbox": [100,200,400,500], "points_1": [200,300], "points_2": [300,400]}</answer>'
)


def test_the_mode_is_per_request_and_reaches_the_policy_as_its_spec(taught_pipeline) -> None:
    """One loaded pipeline serves every mode: each request is rendered, stopped, parsed and
    reported in its own mode, and the policy gets that mode's prompt spec."""
    policy = ScriptedPolicy([TAUGHT] * 5, taught_pipeline.policy.tokenizer)
    config = PipelineConfig(mode="wise_s")
    with WisePipeline(policy, taught_pipeline.segmenter, config, owns_models=False) as pipeline:
        default = pipeline.segment(_image(64, 48, 1), "the cup")
        wise_f = pipeline.segment(_image(64, 48, 1), "the cup", mode="wise_f")
        batch = pipeline.segment_batch([_image(64, 48, 2)] * 2, ["a", "b"], mode="seg_zero")
        assert pipeline.prompt_spec("seg_zero") is pipeline.prompt_spec("seg_zero")  # kept
        with pytest.raises(ValueError, match="no_such_mode"):
            pipeline.segment(_image(64, 48, 1), "the cup", mode="no_such_mode")
    assert [r.mode for r in (default, wise_f, *batch)] == [
        "wise_s",
        "wise_f",
        "seg_zero",
        "seg_zero",
    ]
    assert all(r.ok for r in (default, wise_f, *batch))
    specs = [(spec.mode, stop) for spec, stop in policy.requests]
    assert specs == [
        ("wise_s", ("</answer>",)),
        ("wise_f", ("</d_think>",)),  # wise_f writes its d_think after the answer
        ("seg_zero", ("</answer>",)),
    ]
    assert policy.requests[0][0] == prompts.spec_for("wise_s")


def test_describing_a_pipeline_does_no_io_even_with_its_server_down(taught_pipeline) -> None:
    """describe() reads what the backends kept at load: a policy whose server is down is
    described (and a command answered policy_unavailable), nothing raises."""
    import socket

    from wise_perception.policy.vllm_client import VllmServerPolicy

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = VllmServerPolicy(f"http://127.0.0.1:{port}", retries=0, timeout_s=2.0)
    with WisePipeline(down, taught_pipeline.segmenter, owns_models=False) as pipeline:
        described = pipeline.describe()
        result = pipeline.segment(_image(32, 32, 1), "the cup")
    assert described["policy"] == {
        "name": f"http://127.0.0.1:{port}",
        "backend": "vllm-server",
        "device": "",
        "dtype": "",
    }
    assert described["segmenter"]["backend"] == "transformers"
    assert described["segmenter"]["device"] == "cpu"
    assert described["segmenter"]["dtype"] == "float32"
    assert result.status is Status.POLICY_UNAVAILABLE, result.error


# ---------------------------------------------------------------------- settings checked first


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"device": "cuda"}, "CUDA is not available"),
        ({"device": "tpu9"}, "unknown device"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"policy_backend": "onnx"}, "unknown policy backend"),
        ({"segmenter_backend": "onnx"}, "unknown segmenter backend"),
        ({"mode": "wise_s", "brevity": "  "}, "brevity"),
        ({"batch_size": -1}, "batch_size"),
    ],
)
def test_bad_settings_fail_before_anything_loads(monkeypatch, settings, named) -> None:
    """A bad setting is a SettingsError (a ValueError) naming it, raised before any loader
    runs: here the loaders and the checkpoint checks would fail the test if they ran."""
    import torch

    from wise_perception import pipeline as pipeline_module
    from wise_perception import policy, segmenter

    if settings.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")

    def no_loading(*args, **kwargs):
        raise AssertionError("a model started loading")

    monkeypatch.setattr(policy, "load_policy", no_loading)
    monkeypatch.setattr(segmenter, "load_segmenter", no_loading)
    monkeypatch.setattr(pipeline_module, "manifest_for", no_loading)
    with pytest.raises(SettingsError, match=named):
        WisePipeline.from_pretrained("/no/such/policy", "/no/such/sam2", **settings)


def test_a_damaged_weights_file_is_named_with_what_to_do(
    taught_policy_dir, tiny_sam2_dir, tmp_path
) -> None:
    """An interrupted download or copy (a truncated model.safetensors) of either model: the
    error names the file and says what to do, not safetensors' bare "incomplete metadata"."""
    from wise_perception.weights import CheckpointError

    for broken_one in ("policy", "sam2"):
        policy, sam2 = tmp_path / f"{broken_one}-policy", tmp_path / f"{broken_one}-sam2"
        shutil.copytree(taught_policy_dir, policy)
        shutil.copytree(tiny_sam2_dir, sam2)
        weights = (policy if broken_one == "policy" else sam2) / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError) as info:
            WisePipeline.from_pretrained(policy, sam2, device="cpu")
        message = str(info.value)
        assert str(weights) in message, message
        assert "truncated or corrupted" in message and "download or copy it again" in message
