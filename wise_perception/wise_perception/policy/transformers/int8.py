"""Optional int8 weight-only linear layers for the language model's decode (off by default).

Decode reads every weight once per step, so its time is the bytes of the weights divided by
the memory bandwidth (PERFORMANCE.md: 14.2 GB per bf16 step of Qwen2.5-VL-7B). Storing the
decoder layers' linear weights as int8 with one scale per output channel halves those bytes;
activations stay in the model's dtype and the weight is converted on the fly (under
``torch.compile`` on CUDA the conversion fuses into the matmul's operand load).

Accuracy is NOT checked here on real weights (only random tiny ones): re-measure the
benchmark's accuracy (gIoU/cIoU) on the real checkpoint before turning this on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Int8Linear(nn.Module):
    """``y = (x @ W_int8^T) * scale + b`` with a symmetric per-output-channel scale."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        # Symmetric range [-127, 127]: the scale maps each row's largest |w| to 127.
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight_int8.to(x.dtype)) * self.scale
        return out + self.bias if self.bias is not None else out


def quantize_language_model(model: Any) -> int:
    """Replace the decoder layers' linear layers (attention projections, MLP) with
    :class:`Int8Linear`, in place; the vision tower, embeddings and ``lm_head`` are kept.
    Returns the number of layers replaced."""
    replaced = 0
    for layer in model.model.language_model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Int8Linear(child))
                    replaced += 1
    return replaced
