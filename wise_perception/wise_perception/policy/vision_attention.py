"""Qwen2.5-VL vision tower attention with windows grouped by size.

transformers 5.23 (sdpa) runs one SDPA call per attention window: ``cu_seqlens`` is read back
to the host in every block and the packed sequence is split into windows, so an 840x840 frame
costs 1,796 calls and 32 device-to-host syncs (PERFORMANCE.md). The windows have only a few
distinct sizes (full windows, and the cut ones at the right and bottom edges), so here the
windows of one size are gathered into one batch: one SDPA call per distinct size and block,
and the grouping is computed once per ``cu_seqlens`` tensor (the tower passes the same two
tensors to every block), i.e. two syncs per forward.

:func:`grouped_vision_attention` swaps the attention modules' ``forward`` for the duration of
a ``with`` block (the engine's vision call) and restores it, so ``model.generate`` on the same
model keeps transformers' own path.
"""

from __future__ import annotations

import contextlib
import itertools
import types
import weakref
from collections.abc import Iterator
from typing import Any

import torch

_GROUPS: weakref.WeakKeyDictionary[torch.Tensor, list[torch.Tensor]] = weakref.WeakKeyDictionary()


def window_groups(cu_seqlens: torch.Tensor) -> list[torch.Tensor]:
    """Token indices of the windows, one (windows, length) tensor per distinct length."""
    groups = _GROUPS.get(cu_seqlens)
    if groups is None:
        bounds = cu_seqlens.tolist()  # the one host sync for this tensor
        by_length: dict[int, list[int]] = {}
        for start, end in itertools.pairwise(bounds):
            if end > start:
                by_length.setdefault(end - start, []).append(start)
        groups = []
        for length, starts in by_length.items():
            first = torch.tensor(starts, device=cu_seqlens.device)
            groups.append(first[:, None] + torch.arange(length, device=cu_seqlens.device))
        _GROUPS[cu_seqlens] = groups
    return groups


def _grouped_forward(
    self: Any,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_seqlen: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    length = hidden_states.shape[0]
    qkv = self.qkv(hidden_states).reshape(length, 3, self.num_heads, -1).permute(1, 0, 2, 3)
    query, key, value = qkv.unbind(0)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)
    out = torch.empty_like(query)  # (tokens, heads, head_dim)
    for index in window_groups(cu_seqlens):
        # (windows, heads, length, head_dim): one batched call for all windows of this size.
        q, k, v = (t[index].transpose(1, 2) for t in (query, key, value))
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
        out[index] = attended.transpose(1, 2)
    return self.proj(out.reshape(length, -1))


@contextlib.contextmanager
def grouped_vision_attention(visual: Any) -> Iterator[None]:
    """Within the block, every vision attention module of ``visual`` uses the grouped path."""
    modules = [block.attn for block in visual.blocks]
    saved = [m.__dict__.get("forward") for m in modules]
    try:
        for module in modules:
            module.forward = types.MethodType(_grouped_forward, module)
        yield
    finally:
        for module, previous in zip(modules, saved, strict=True):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
