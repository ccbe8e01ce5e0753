"""Policy and segmenter backends: transformers (real tiny models), vLLM (import error, and the
server client against a small local stand-in for the GPU vLLM server)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
import torch
from support.greedy import assert_same_greedy, greedy_rows

from wise_dev.teach import TAUGHT_COMPLETION
from wise_perception.backend_info import BackendInfo
from wise_perception.core.answer import ObjectPrompt
from wise_perception.core.geometry import ResizeProtocol
from wise_perception.core.prompts import build_instruction, build_messages, spec_for
from wise_perception.pipeline import PipelineConfig, WisePipeline
from wise_perception.policy import load_policy
from wise_perception.policy.transformers.backend import PROMPT_TOKEN_BUDGET, TransformersPolicy
from wise_perception.policy.vllm_client import (
    PolicyServerError,
    PolicyUnavailableError,
    VllmServerPolicy,
)
from wise_perception.policy.vllm_engine import VLLM_MISSING, VllmPolicy
from wise_perception.result import Status
from wise_perception.segmenter import load_segmenter


def policy_frame(image: np.ndarray) -> np.ndarray:
    return ResizeProtocol().resize(image)


def _image(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------- transformers


def test_transformers_prompt_is_the_contract(taught_pipeline) -> None:
    policy = taught_pipeline.policy
    spec = spec_for("wise_s")
    expected = policy.processor.apply_chat_template(
        build_messages("the cup", spec), add_generation_prompt=True, tokenize=False
    )
    assert policy.prompt_text(build_instruction("the cup", spec)) == expected
    assert policy.tokenizer.padding_side == "left"
    # With a system prompt (training's data.system_prompt, carried by the manifest) the
    # policy renders exactly what training's TRL prompt renders.
    system = "You segment for a robot."
    trained = policy.processor.apply_chat_template(
        build_messages("the cup", spec, system=system), add_generation_prompt=True, tokenize=False
    )
    served = TransformersPolicy(policy.model, policy.processor, system_prompt=system)
    assert served.prompt_text(build_instruction("the cup", spec)) == trained
    assert system in trained and trained != expected


@pytest.mark.parametrize("mode", ["wise_s", "seg_zero"])
def test_batched_greedy_equals_one_at_a_time(random_pipeline, mode) -> None:
    """Left padding and batching are right when the batched greedy tokens equal the tokens of
    each prompt generated alone (float32, the random tiny policy: nothing memorised)."""
    policy = random_pipeline.policy
    spec = spec_for(mode)
    questions = ["a", "the red cup on the left of the robot, next to the bottle", "the mug"]
    frames = [
        policy_frame(_image(w, h, i)) for i, (w, h) in enumerate([(64, 48), (320, 240), (96, 128)])
    ]
    texts = [policy.prompt_text(build_instruction(q, spec)) for q in questions]
    eos = {policy.tokenizer.eos_token_id}

    def run(indices: list[int]):
        inputs = policy.processor(
            text=[texts[i] for i in indices],
            images=[frames[i] for i in indices],
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            out = policy.model.generate(
                **inputs,
                max_new_tokens=24,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        return greedy_rows(out, inputs["input_ids"].shape[1], eos), out.scores

    batched, _ = run([0, 1, 2])
    assert len({len(policy.tokenizer(t)["input_ids"]) for t in texts}) > 1  # padding happens
    for i in range(3):
        (alone,), scores = run([i])
        assert_same_greedy(alone, [s[0] for s in scores], batched[i], what=f"prompt {i}")


def test_transformers_generation_and_timings(taught_pipeline) -> None:
    policy = taught_pipeline.policy
    frame = np.zeros((840, 840, 3), dtype=np.uint8)
    long_question = "the red cup on the left of the robot, next to the bottle"
    instructions = [
        build_instruction("a", spec_for("wise")),
        build_instruction(long_question, spec_for("seg_zero")),
    ]
    outputs = policy.generate([frame, frame], instructions)  # different lengths: left padding
    for out in outputs:
        assert out.text == TAUGHT_COMPLETION
        assert (
            out.generated_tokens
            == len(policy.tokenizer.encode(TAUGHT_COMPLETION, add_special_tokens=False)) + 1
        )
        assert out.prefill_s > 0 and out.decode_s > 0
    policy.max_new_tokens = 5
    try:
        cut = policy.generate([frame], instructions[:1])[0]
    finally:
        policy.max_new_tokens = 96
    assert cut.generated_tokens == 5 and cut.text == TAUGHT_COMPLETION[: len(cut.text)]
    assert policy.info() == BackendInfo(str(policy.name), "transformers", "cpu", "float32")


@pytest.mark.parametrize("engine", ["engine", "generate"])
def test_an_injected_token_chooser_decides_every_token(random_pipeline, engine) -> None:
    """Token choice is a function (greedy by default): a scripted chooser makes even the random
    policy write a given completion, in the own engine and in ``model.generate`` alike, with
    the forced schema's count of forwards where it applies."""
    from wise_dev.decoding import scripted

    base = random_pipeline.policy
    policy = TransformersPolicy(base.model, base.processor, engine=engine, max_new_tokens=96)
    ids = policy.tokenizer.encode(TAUGHT_COMPLETION, add_special_tokens=False)
    spec = spec_for("wise_s")
    frame = np.zeros((840, 840, 3), dtype=np.uint8)
    instruction = build_instruction("the red square", spec)
    greedy = policy.generate([frame], [instruction], spec=spec, stop=("</answer>",))[0]
    assert greedy.text != TAUGHT_COMPLETION  # random weights write junk
    policy.choose = scripted(ids, end=policy.tokenizer.eos_token_id)
    (out,) = policy.generate([frame], [instruction], spec=spec, stop=("</answer>",))
    assert out.text == TAUGHT_COMPLETION and out.generated_tokens == len(ids)
    if engine == "engine":  # the forced schema wrote the answer's fixed text
        assert out.forward_passes < len(ids)
    else:
        assert out.forward_passes == len(ids)


def test_static_cache_generation_matches_the_dynamic_cache(taught_pipeline) -> None:
    """The ``compile`` path's static KV cache, sized once for every request, gives the same
    greedy answers for prompts of different lengths, alone and batched. (On CUDA, generate
    also torch.compiles the decode step; that part needs a GPU and is not run here.)"""
    policy = taught_pipeline.policy
    frame = np.zeros((840, 840, 3), dtype=np.uint8)
    short = build_instruction("a", spec_for("wise_s"))
    long_ = build_instruction(
        "the small red cup on the left of the laptop, next to the robot", spec_for("wise_s")
    )
    policy.compile = True  # what compile=True gives on CUDA; the constructor keeps it off on CPU
    try:
        config = policy._generation_config()
        assert config.cache_implementation == "static"
        assert config.max_cache_len == PROMPT_TOKEN_BUDGET + policy.max_new_tokens
        outputs = [
            *policy.generate([frame], [short]),
            *policy.generate([frame], [long_]),
            *policy.generate([frame, frame], [short, long_]),
        ]
    finally:
        policy.compile = False
    assert [o.text for o in outputs] == [TAUGHT_COMPLETION] * 4


def test_compile_needs_cuda(taught_pipeline, caplog) -> None:
    policy = taught_pipeline.policy
    with caplog.at_level("WARNING"):
        cpu = TransformersPolicy(policy.model, policy.processor, device="cpu", compile=True)
    assert cpu.compile is False and "needs a CUDA device" in caplog.text
    assert getattr(cpu._generation_config(), "cache_implementation", None) != "static"


def test_sam2_keeps_the_best_of_three_masks(tiny_sam2_dir) -> None:
    from transformers import Sam2Model, Sam2Processor

    segmenter = load_segmenter(tiny_sam2_dir, device="cpu")
    image = _image(320, 240, 1)
    objects = [
        ObjectPrompt((40.0, 30.0, 200.0, 150.0), ((80.0, 60.0), (150.0, 120.0))),
        ObjectPrompt((10.0, 10.0, 60.0, 50.0), ((30.0, 30.0),)),  # a different point count
    ]
    encoding = segmenter.encode(image)
    segmented = segmenter.decode(encoding, objects)
    assert len(segmented) == 2 and all(s.mask.shape == (240, 320) for s in segmented)
    # The first object, straight from the transformers API (full forward, three masks).
    model, processor = (
        Sam2Model.from_pretrained(tiny_sam2_dir).eval(),
        Sam2Processor.from_pretrained(tiny_sam2_dir),
    )
    inputs = processor(
        images=image,
        input_boxes=[[[40, 30, 200, 150]]],
        input_points=[[[[80, 60], [150, 120]]]],
        input_labels=[[[1, 1]]],
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**inputs, multimask_output=True)
    best = int(out.iou_scores[0, 0].argmax())
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0]
    assert np.array_equal(segmented[0].mask, masks[0, best].numpy())
    assert segmented[0].score == pytest.approx(float(out.iou_scores[0, 0, best]), abs=1e-5)
    assert segmenter.decode(encoding, []) == []


def test_unknown_backends_are_refused(tiny_sam2_dir) -> None:
    with pytest.raises(ValueError, match="unknown policy backend"):
        load_policy("x", backend="onnx")
    with pytest.raises(ValueError, match="unknown segmenter backend"):
        load_segmenter(tiny_sam2_dir, backend="onnx")


# ---------------------------------------------------------------------- vLLM in-process


def test_vllm_in_process_needs_vllm(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match="pip install") as info:
        VllmPolicy.from_pretrained("/some/checkpoint")
    assert str(info.value) == VLLM_MISSING
    with pytest.raises(ImportError, match="wise-perception\\[vllm\\]"):
        load_policy("/some/checkpoint", backend="vllm")


# ---------------------------------------------------------------------- vLLM server client


class FakeVllmServer:
    """A stand-in for the GPU vLLM OpenAI-compatible server, on 127.0.0.1 (no GPU here).

    Answers /v1/models, /tokenize (whitespace tokens) and /v1/chat/completions (streamed as
    server-sent events or not) with a fixed completion; records every request it got.
    """

    def __init__(self, completion: str, *, delay_s: float = 0.0, fail: int = 0) -> None:
        self.completion, self.delay_s, self.fail = completion, delay_s, fail
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, code: int, data: dict) -> None:
                body = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, "body": None})
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "wise-s-7b"}]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body})
                if self.path == "/tokenize":
                    tokens = list(range(len(body["prompt"].split())))
                    self._json(200, {"tokens": tokens, "count": len(tokens)})
                    return
                if server.fail:
                    self._json(server.fail, {"error": {"message": "KV cache is full"}})
                    return
                time.sleep(server.delay_s)
                pieces = server.completion.split(" ")
                pieces = [p + " " for p in pieces[:-1]] + pieces[-1:]
                if not body.get("stream"):
                    self._json(
                        200,
                        {
                            "choices": [{"message": {"content": server.completion}}],
                            "usage": {"completion_tokens": len(pieces)},
                        },
                    )
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in pieces:
                    event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                usage = {"choices": [], "usage": {"completion_tokens": len(pieces)}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeVllmServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server() -> Iterator[FakeVllmServer]:
    with FakeVllmServer(TAUGHT_COMPLETION) as server:
        yield server


def test_server_client_sends_the_image_and_reads_the_stream(fake_server) -> None:
    policy = load_policy(fake_server.url, max_new_tokens=77)
    assert isinstance(policy, VllmServerPolicy)
    # Describing the client asks the server nothing; the first request learns the model.
    assert policy.info() == BackendInfo(fake_server.url, "vllm-server")
    assert (policy.url, policy.tokenizer is not None) == (fake_server.url, True)
    assert fake_server.requests == []
    image = _image(56, 28, 2)
    out = policy.generate([image], ["find the cup"])[0]
    assert policy.served_model() == "wise-s-7b"
    assert policy.info().name == f"{fake_server.url}#wise-s-7b"
    assert out.text == TAUGHT_COMPLETION
    assert out.generated_tokens == len(TAUGHT_COMPLETION.split(" "))
    assert out.prefill_s >= 0 and out.decode_s >= 0
    body = fake_server.requests[-1]["body"]
    assert body["model"] == "wise-s-7b" and body["temperature"] == 0.0 and body["max_tokens"] == 77
    assert body["stream"] is True
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "find the cup"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    png = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), dtype=np.uint8)
    decoded = cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, image)  # lossless
    # Non-streamed answers and batches work too; '#model' in the URL names the served model.
    batch = load_policy(fake_server.url + "#other", stream=False).generate(
        [image, image], ["a", "b"]
    )
    assert [o.text for o in batch] == [TAUGHT_COMPLETION] * 2
    assert fake_server.requests[-1]["body"]["model"] == "other"


def test_pipeline_with_the_server_policy(fake_server, tiny_sam2_dir) -> None:
    segmenter = load_segmenter(tiny_sam2_dir, device="cpu")
    with WisePipeline(load_policy(fake_server.url), segmenter, PipelineConfig()) as pipeline:
        result = pipeline.segment(_image(640, 480, 3), "the red square")
    assert result.status is Status.OK, result.error
    assert result.objects[0].box == (76, 114, 305, 286)
    # #Tok through the server's /tokenize (the stand-in counts whitespace words).
    assert result.reasoning_tokens == len(["the", "red", "square", "is", "on", "the", "left"])
    assert any(r["path"] == "/tokenize" for r in fake_server.requests)


def test_server_errors_are_clear(tiny_sam2_dir) -> None:
    with FakeVllmServer(TAUGHT_COMPLETION, fail=503) as server:
        policy = load_policy(server.url)
        with pytest.raises(PolicyServerError, match=r"HTTP 503.*KV cache is full"):
            policy.generate([_image(28, 28, 4)], ["x"])
        # In the pipeline: a named per-request error, not an exception.
        with WisePipeline(policy, load_segmenter(tiny_sam2_dir, device="cpu")) as pipeline:
            result = pipeline.segment(_image(28, 28, 4), "x")
        assert result.status is Status.INTERNAL_ERROR and "HTTP 503" in result.error
    with FakeVllmServer(TAUGHT_COMPLETION, delay_s=1.0) as server:
        slow = load_policy(server.url, timeout_s=0.2)
        with pytest.raises(PolicyServerError, match="timed out"):
            slow.generate([_image(28, 28, 5)], ["x"])
    # The server is gone: loading succeeds (a robot may start before its server), the first
    # request says the server is unreachable.
    gone = load_policy(server.url, retries=0)
    with pytest.raises(PolicyUnavailableError, match="unreachable"):
        gone.generate([_image(28, 28, 5)], ["x"])


def test_the_server_client_sends_the_regex_of_the_requests_spec(fake_server) -> None:
    """structured_output=True: each request carries the regex of its own prompt spec (span
    order and answer schema); without a spec, none."""
    from wise_perception.policy.vllm_structured import completion_regex

    policy = load_policy(fake_server.url, structured_output=True)
    image = _image(28, 28, 3)
    for mode, schema in (("wise_s", "single"), ("wise_f", "multi")):
        spec = spec_for(mode, schema=schema)
        policy.generate([image], ["x"], spec=spec)
        sent = fake_server.requests[-1]["body"]["structured_outputs"]["regex"]
        assert sent == completion_regex(spec.order, spec.schema)
    policy.generate([image], ["x"])
    assert "structured_outputs" not in fake_server.requests[-1]["body"]


def test_completion_regex_admits_only_json_the_parser_accepts() -> None:
    import re

    from wise_perception.core.answer import ParsedAnswer, parse_completion
    from wise_perception.policy.vllm_structured import completion_regex

    regex = completion_regex()
    assert re.fullmatch(regex, TAUGHT_COMPLETION)
    assert isinstance(parse_completion(TAUGHT_COMPLETION), ParsedAnswer)
    # A no-break space matched \s once: the server then wrote an answer json cannot read.
    nbsp = TAUGHT_COMPLETION.replace("[200,300]", "[200,\xa0300]")
    assert not re.fullmatch(regex, nbsp)
