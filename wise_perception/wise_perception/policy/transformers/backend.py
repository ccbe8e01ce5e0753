"""Policy backend on Hugging Face transformers (CPU and GPU; the default backend).

Loads a Qwen2.5-VL (or any image-text-to-text) checkpoint folder or hub id with
``AutoProcessor`` + ``Qwen2_5_VLForConditionalGeneration`` / ``AutoModelForImageTextToText``,
safetensors only and never ``trust_remote_code``. Generation is greedy and batched with left
padding. Prefill (time to first token, vision encoder included) and decode are told apart by a
logits processor that timestamps its first call: ``generate`` calls it right after the first
forward pass, before the first token is chosen, so it costs nothing and measures exactly the
prompt's forward.

``compile=True`` (CUDA): a static KV cache sized once for the worst case, which lets
``generate`` torch.compile the decode step once and reuse it for every command length.
Measured on an H100 with random-weight Qwen2.5-VL-7B (bf16, sdpa): 75 generated tokens
in 0.91 s instead of 2.2-2.5 s; the first call compiles (about 35 s), so warm up first.

``engine="engine"`` (the default for Qwen2.5-VL checkpoints): generation runs in
:mod:`.engine` (own decode loop, static KV cache sized per request, end checks every few
steps) with the forced answer schema of :mod:`.forced_schema` (``forced_schema=True``) when the
tokenizer passes its check, the stop strings include ``</answer>`` and the request's prompt
spec puts the answer right after the rationale. ``engine="generate"`` falls back to
``model.generate``. Both give the same completion text and stop behaviour.

Token choice is greedy; ``choose`` (a :data:`.engine.TokenChooser`) replaces it in both
engines (in ``model.generate`` as a logits processor that leaves only the chosen token): the
benchmark teacher-forces a given completion through it (``wise_dev.decoding``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...backend_info import BackendInfo, dtype_name
from ...core.manifest import DEFAULT_MAX_NEW_TOKENS
from ...core.prompts import PromptSpec, chat_messages
from ...device import resolve_device, resolve_dtype
from ..base import PolicyBackend, PolicyOutput
from .engine import TokenChooser

LOG = logging.getLogger(__name__)


class _FirstTokenClock:
    """Logits processor that records when the first token's scores are ready (end of prefill)."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
        return scores


class _ChosenToken:
    """Logits processor that leaves only the token ``choose`` picks (``model.generate`` then
    takes it greedily): the engines' :data:`.engine.TokenChooser` in ``generate``."""

    def __init__(self, choose: TokenChooser, prompt_length: int) -> None:
        self.choose, self.prompt_length = choose, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        positions = torch.full(
            (input_ids.shape[0],),
            input_ids.shape[1] - self.prompt_length,
            dtype=torch.long,
            device=input_ids.device,
        )
        chosen = self.choose(scores, positions)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, chosen[:, None], 0.0)


# Prompt tokens the static cache reserves besides the completion: 900 vision tokens of an
# 840x840 frame, the template, and a command of up to MAX_QUESTION_CHARS characters.
PROMPT_TOKEN_BUDGET = 2048
ENGINES = ("engine", "generate")
# Rendered chat templates kept per instruction (the node sends the same few commands).
TEMPLATE_CACHE_SIZE = 256


class TransformersPolicy(PolicyBackend):
    """Greedy batched generation with a transformers vision-language model.

    ``max_new_tokens`` bounds the completion. ``compile`` (CUDA only) turns on the static
    cache + compiled decode step; ``choose`` replaces greedy token choice (module docstring).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: str = "cpu",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        name: str = "",
        compile: bool = False,
        engine: str = "auto",
        forced_schema: bool = True,
        int8_decode: bool = False,
        choose: TokenChooser | None = None,
    ) -> None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise TypeError(
                f"{name or 'the policy'}: AutoProcessor gave {type(processor).__name__}, not an "
                "image+text processor; the checkpoint folder needs the processor files "
                "(preprocessor_config.json, tokenizer files, chat template)"
            )
        tokenizer.padding_side = "left"  # batched generation appends after the prompt
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model
        self.processor = processor
        self.tokenizer = tokenizer
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.system_prompt = system_prompt
        self.name = name
        self.compile = bool(compile) and str(device).startswith("cuda")
        if compile and not self.compile:
            LOG.warning("compile=True needs a CUDA device; %s generates uncompiled", device)
        self._lock = threading.Lock()  # one generate at a time per model
        self._templates: dict[str, str] = {}
        from .inputs import PolicyInputs

        self.inputs = PolicyInputs(processor, device)  # on the device, token ids kept
        is_qwen = getattr(getattr(model, "config", None), "model_type", "") == "qwen2_5_vl"
        if engine == "auto":
            engine = "engine" if is_qwen else "generate"
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if engine == "engine" and not is_qwen:
            raise ValueError("engine='engine' supports Qwen2.5-VL checkpoints only")
        self.engine_name = engine
        self.forced_schema = bool(forced_schema)
        self.int8_decode = bool(int8_decode)
        self.choose = choose  # None: greedy (engine.greedy)
        self._info = BackendInfo(name, "transformers", str(device), dtype_name(model.dtype))
        self._engine: Any = None
        self._grammar: Any = None
        self._grammar_built = False

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        dtype: Any = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        attn_implementation: str | None = None,
        compile: bool = False,
        engine: str = "auto",
        forced_schema: bool = True,
        int8_decode: bool = False,
    ) -> TransformersPolicy:
        from transformers import AutoProcessor

        from ..loader import load_model

        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        source = str(path)
        # The one loader of inference, training and export (safetensors, or pickles that
        # load with weights_only=True; never remote code).
        model = load_model(source, dtype=torch_dtype, attn_implementation=attn_implementation)
        model = model.to(device).eval()
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=False)
        return cls(
            model,
            processor,
            device=device,
            max_new_tokens=max_new_tokens,
            system_prompt=system_prompt,
            name=source,
            compile=compile,
            engine=engine,
            forced_schema=forced_schema,
            int8_decode=int8_decode,
        )

    def info(self) -> BackendInfo:
        return self._info

    # ------------------------------------------------------------------ generation

    def prompt_text(self, instruction: str) -> str:
        """The chat-formatted prompt for one instruction (image placeholder included); the
        rendering is cached per instruction (the template is fixed, Jinja is not free)."""
        key = f"{self.system_prompt!r}\0{instruction}"
        text = self._templates.get(key)
        if text is None:
            messages = chat_messages(instruction, system=self.system_prompt)
            text = self.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            if len(self._templates) >= TEMPLATE_CACHE_SIZE:
                self._templates.pop(next(iter(self._templates)))
            self._templates[key] = text
        return text

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        base = getattr(self.model, "generation_config", None)
        config = (
            GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
        )
        config.do_sample = False
        config.num_beams = 1
        config.temperature = None
        config.top_p = None
        config.top_k = None
        config.max_new_tokens = self.max_new_tokens
        if config.eos_token_id is None:
            config.eos_token_id = self.tokenizer.eos_token_id
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id
        if self.compile:
            # One cache size for every request: generate compiles the decode step for a cache
            # shape, so a per-request size would recompile for each new command length.
            config.cache_implementation = "static"
            config.max_cache_len = PROMPT_TOKEN_BUDGET + self.max_new_tokens
        return config

    def _eos_ids(self, config: Any) -> set[int]:
        eos = config.eos_token_id
        ids = set(eos) if isinstance(eos, list | tuple) else {eos}
        ids.add(self.tokenizer.eos_token_id)
        return {int(i) for i in ids if i is not None}

    def generate(
        self,
        images: list[np.ndarray],
        instructions: list[str],
        *,
        spec: PromptSpec | None = None,
        stop: Sequence[str] = (),
    ) -> list[PolicyOutput]:
        """See :meth:`PolicyBackend.generate`; ``spec`` decides whether the forced answer
        schema can write the answer (module docstring)."""
        import torch

        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images for {len(instructions)} instructions")
        if not images:
            return []
        texts = [self.prompt_text(instruction) for instruction in instructions]
        config = self._generation_config()
        stop = tuple(s for s in stop if s)
        if stop:
            config.stop_strings = list(stop)
        clock = _FirstTokenClock()
        with self._lock:
            start = time.perf_counter()
            inputs = self.inputs(images, texts)
            if "pixel_values" in inputs and self.model.dtype != inputs["pixel_values"].dtype:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            eos_ids = self._eos_ids(config)
            with torch.inference_mode():
                if self.engine_name == "engine":
                    new, passes = self._engine_rows(inputs, spec, config, eos_ids, stop, clock)
                else:
                    processors: list[Any] = [clock]
                    if self.choose is not None:
                        processors.append(_ChosenToken(self.choose, inputs["input_ids"].shape[1]))
                    out = self.model.generate(
                        **inputs,
                        generation_config=config,
                        logits_processor=processors,
                        tokenizer=self.tokenizer,  # stop strings are matched on decoded text
                    )
                    new = out[:, inputs["input_ids"].shape[1] :].tolist()
                    passes = None  # one forward per generated token
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            end = time.perf_counter()
        first = clock.first if clock.first is not None else end
        outputs = []
        for i, row in enumerate(new):
            text, length = self._completion(row, eos_ids, stop)
            outputs.append(
                PolicyOutput(
                    text=text,
                    generated_tokens=length,
                    prefill_s=first - start,
                    decode_s=end - first,
                    forward_passes=passes[i] if passes is not None else length,
                )
            )
        return outputs

    # ------------------------------------------------------------------ own engine

    def grammar(self) -> Any:
        """The forced-schema grammar of this tokenizer (None when it fails the check)."""
        if not self._grammar_built:
            from .forced_schema import AnswerGrammar

            self._grammar = AnswerGrammar.build(self.tokenizer)
            self._grammar_built = True
        return self._grammar

    def engine(self) -> Any:
        if self._engine is None:
            from .engine import Qwen25VLEngine

            if self.int8_decode:
                from .int8 import quantize_language_model

                quantize_language_model(self.model)
            self._engine = Qwen25VLEngine(self.model, compile=self.compile)
        return self._engine

    def _engine_rows(
        self,
        inputs: Any,
        spec: PromptSpec | None,
        config: Any,
        eos_ids: set[int],
        stop: Sequence[str],
        clock: _FirstTokenClock,
    ) -> tuple[list[list[int]], list[int]]:
        """The generated rows and the forward passes each needed."""
        from .engine import greedy
        from .forced_schema import RowMachine, schema_options

        engine = self.engine()
        choose = self.choose or greedy

        def decode(row: list[int]) -> str:
            return self.tokenizer.decode(row, skip_special_tokens=True)

        def stop_check(row: list[int]) -> bool:
            text = decode(row)
            return any(s in text for s in stop)

        def first_token() -> None:
            clock(None, None)

        pad_id = int(config.pad_token_id)
        allowed, multi = schema_options(spec, stop)
        grammar = self.grammar() if self.forced_schema and allowed else None
        if grammar is not None:
            result = engine.generate_forced(
                inputs,
                [RowMachine(grammar, allow_multi=multi) for _ in range(len(inputs["input_ids"]))],
                max_new_tokens=self.max_new_tokens,
                eos_ids=eos_ids,
                pad_id=pad_id,
                decode=decode,
                stop_check=stop_check if stop else None,
                extra_slots=grammar.longest_piece + 1,
                on_first_token=first_token,
                choose=choose,
            )
        else:
            result = engine.generate(
                inputs,
                max_new_tokens=self.max_new_tokens,
                eos_ids=eos_ids,
                pad_id=pad_id,
                stop_check=stop_check if stop else None,
                on_first_token=first_token,
                choose=choose,
            )
        return result.rows, result.passes_per_row

    def _completion(
        self, row: list[int], eos_ids: set[int], stop: Sequence[str]
    ) -> tuple[str, int]:
        """Text and token count of one generated row.

        Up to and including the first end-of-turn token (rows that finished early are padded
        after it by generate; rows without one ran into the budget), or up to the token that
        completed a stop string, whichever comes first; text after the stop string (a merged
        token's tail) is cut.
        """
        ends = [i for i, token in enumerate(row) if token in eos_ids]
        length = ends[0] + 1 if ends else len(row)
        text = self.tokenizer.decode(row[:length], skip_special_tokens=True)
        hits = [(text.find(s), s) for s in stop if s in text]
        if not hits:
            return text, length
        at, hit = min(hits)
        # The fewest tokens whose text holds the stop string: generate stopped there.
        while length > 1 and hit in self.tokenizer.decode(
            row[: length - 1], skip_special_tokens=True
        ):
            length -= 1
        return text[: at + len(hit)], length

    def close(self) -> None:
        self.model = None  # the pipeline gives the memory back (device.release_cuda_memory)
        self._engine = None
