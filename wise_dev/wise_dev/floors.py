"""Physical floors of one command, for the benchmark: how fast each stage could possibly be.

A stage's floor is the larger of its compute at the device's measured matmul rate and its
memory traffic at the device's measured bandwidth. FLOPs are counted on the real models with
``torch.utils.flop_counter`` (one forward each, the same inputs a request sends); a decode
step reads every decoder and ``lm_head`` weight once plus the KV cache, so its floor is bytes
over bandwidth (PERFORMANCE.md: 14.2 GB and ~4.2 ms for Qwen2.5-VL-7B on an H100).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceRates:
    """What the device sustains: bytes/s of a large device copy, FLOP/s of a large matmul."""

    bandwidth: float
    flops: float
    device: str


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_rates(device: str, dtype: Any, *, repeats: int = 5) -> DeviceRates:
    """Measure the copy bandwidth (read + write) and the matmul rate, best of ``repeats``."""
    import torch

    gpu = device.startswith("cuda")
    n_bytes = (1 << 30) if gpu else (1 << 26)  # 1 GiB on a GPU, 64 MiB on a CPU
    size = 8192 if gpu else 1024
    src = torch.empty(n_bytes // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best_copy = best_mm = float("inf")
    for _ in range(repeats + 1):  # the first of each warms up
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best_copy = min(best_copy, time.perf_counter() - start)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best_mm = min(best_mm, time.perf_counter() - start)
    return DeviceRates(2 * n_bytes / best_copy, 2 * size**3 / best_mm, device)


def count_flops(fn: Any) -> int:
    """FLOPs of ``fn()`` as torch's flop counter counts them (matmuls and attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def decode_step_bytes(model: Any, context_tokens: int) -> int:
    """Bytes one decode step must read: the language model's decoder layers and ``lm_head``,
    one embedding row, and the KV cache at ``context_tokens``."""
    language = model.model.language_model
    params = sum(p.numel() * p.element_size() for p in language.layers.parameters())
    params += sum(p.numel() * p.element_size() for p in model.lm_head.parameters())
    embed = language.embed_tokens.weight
    params += embed.shape[1] * embed.element_size()
    config = model.config.text_config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * context_tokens
    return params + kv * embed.element_size()


@dataclass(frozen=True)
class Floors:
    """Seconds: each stage's floor on this device (see the module docstring)."""

    vision: float
    prefill: float  # language model over the prompt (vision tokens included)
    decode_step: float
    sam_encode: float
    rates: DeviceRates

    def command(self, steps: int) -> float:
        """A whole command: vision + prefill + ``steps`` decode steps (SAM2's encode overlaps)."""
        return self.vision + self.prefill + steps * self.decode_step


def policy_floors(policy: Any, segmenter: Any, image: Any, instruction: str) -> Floors:
    """Floors of one request on ``image`` (policy frame) with the real models, measured once."""
    model, device = policy.model, str(policy.device)
    dtype = next(model.parameters()).dtype
    rates = measure_rates(device, dtype)
    inputs = policy.processor(
        text=[policy.prompt_text(instruction)], images=[image], return_tensors="pt"
    ).to(device)
    pixels = inputs["pixel_values"].to(dtype)
    visual = model.model.visual
    vision = count_flops(lambda: visual(pixels, grid_thw=inputs["image_grid_thw"]))
    total = count_flops(lambda: model(**inputs, use_cache=False, logits_to_keep=1))
    step_bytes = decode_step_bytes(model, int(inputs["input_ids"].shape[1]))
    sam = _sam_encode_flops(segmenter, image)

    def floor(flops: float) -> float:
        return flops / rates.flops

    return Floors(
        vision=floor(vision),
        prefill=floor(max(total - vision, 0)),
        decode_step=step_bytes / rates.bandwidth,
        sam_encode=floor(sam),
        rates=rates,
    )


def _sam_encode_flops(segmenter: Any, image: Any) -> int:
    """FLOPs of SAM2's image encoder (transformers backend); 0 where it cannot be counted."""
    model = getattr(segmenter, "model", None)
    processor = getattr(segmenter, "processor", None)
    if model is None or processor is None or not hasattr(model, "get_image_embeddings"):
        return 0
    inputs = processor(images=image, input_data_format="channels_last", return_tensors="pt")
    dtype = next(model.parameters()).dtype
    pixels = inputs["pixel_values"].to(segmenter.device, dtype=dtype)
    return count_flops(lambda: model.get_image_embeddings(pixels))
