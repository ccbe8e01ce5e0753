"""Qwen2.5-VL's vision tower, run from its own modules with the image layout computed once.

transformers 5.23 works out, in every forward, the window order of the patches, its inverse,
the rotary table and the window boundaries (host loops and syncs), and under sdpa runs one
SDPA call per attention window: 1,796 calls and 32 device-to-host syncs for an 840x840 frame
(PERFORMANCE.md). All of that depends only on the image grid, and a command's frame is always
the policy frame, so here it is computed once per grid and kept (:class:`VisionLayout`). A
forward is then tensor work only: patch embedding, the blocks (attention as one batched SDPA
call per distinct window size: full windows and the ones cut at the right and bottom edges),
the merger. With no host work left it is one static-shape graph, which ``compile=True``
hands to ``torch.compile`` (CUDA).

The weights are the model's own modules (``patch_embed``, ``blocks``, ``merger``); only the
order of operations is written here, checked against transformers' forward in the tests.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

# Grids whose layout is kept: the policy frame's, plus a few for the CLI's and evaluation's
# other image sizes (the evaluator resizes every image to the policy frame too).
LAYOUT_CACHE_SIZE = 8


@dataclass(frozen=True)
class VisionLayout:
    """What a forward needs besides the pixels, for one tuple of image grids."""

    window_index: torch.Tensor  # merged-patch order inside windows (transformers' window order)
    reverse: torch.Tensor  # back to raster order after the merger
    cos: torch.Tensor  # rotary table in window order
    sin: torch.Tensor
    window_groups: tuple[torch.Tensor, ...]  # (windows, length) token indices per window size
    full_groups: tuple[torch.Tensor, ...]  # the same for full attention (one window per image)


def group_by_length(cu_seqlens: list[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Token indices of the segments ``[cu[i], cu[i+1])``, one (segments, length) tensor per
    distinct length: one batched attention call covers every segment of that length."""
    by_length: dict[int, list[int]] = {}
    for start, end in itertools.pairwise(cu_seqlens):
        if end > start:
            by_length.setdefault(end - start, []).append(start)
    return tuple(
        torch.tensor(starts, device=device)[:, None] + torch.arange(length, device=device)
        for length, starts in by_length.items()
    )


class VisionTower:
    """``tower(pixel_values, image_grid_thw)`` -> image features, as
    ``model.get_image_features(...).pooler_output`` concatenated over the images."""

    def __init__(self, visual: Any, *, compile: bool = False) -> None:
        self.visual = visual
        self.full_blocks = frozenset(visual.fullatt_block_indexes)
        self._layouts: OrderedDict[tuple[Any, ...], VisionLayout] = OrderedDict()
        self._lock = threading.Lock()
        self._run = self._forward
        if compile:
            # Static shapes per grid: one graph for the policy frame, compiled on first use.
            self._run = torch.compile(self._forward, fullgraph=True, dynamic=False)

    def __call__(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        layout = self.layout(grid_thw)
        return self._run(pixel_values.to(self.visual.dtype), layout)

    def layout(self, grid_thw: torch.Tensor) -> VisionLayout:
        grids = tuple(tuple(int(v) for v in row) for row in grid_thw.tolist())
        device = self.visual.patch_embed.proj.weight.device
        key = (grids, str(device))
        with self._lock:
            cached = self._layouts.get(key)
            if cached is not None:
                self._layouts.move_to_end(key)
                return cached
        layout = self._compute_layout(torch.tensor(grids, device=device))
        with self._lock:
            self._layouts[key] = layout
            while len(self._layouts) > LAYOUT_CACHE_SIZE:
                self._layouts.popitem(last=False)
        return layout

    def _compute_layout(self, grid_thw: torch.Tensor) -> VisionLayout:
        # transformers' own helpers give the window order and boundaries (so the order is
        # theirs by construction); they run once per grid here instead of every forward.
        from transformers.vision_utils import (
            get_vision_attention_seqlens,
            get_vision_position_ids,
            get_vision_window_index,
        )

        visual = self.visual
        config = visual.config
        position_ids = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
        cu_seqlens, _ = get_vision_attention_seqlens(grid_thw, config)
        window_index, cu_window_seqlens = get_vision_window_index(
            grid_thw,
            spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        window_index = window_index.to(grid_thw.device)
        seq_len = int(position_ids.shape[0])
        probe = visual.patch_embed.proj.weight  # device and dtype only
        cos, sin = visual.rotary_pos_emb(probe, position_ids)
        cos, sin = (
            visual.permute_input_for_window_attn(t, window_index, seq_len=seq_len)
            for t in (cos, sin)
        )
        device = grid_thw.device
        return VisionLayout(
            window_index=window_index,
            reverse=torch.argsort(window_index),
            cos=cos,
            sin=sin,
            window_groups=group_by_length(cu_window_seqlens.tolist(), device),
            full_groups=group_by_length(cu_seqlens.tolist(), device),
        )

    def _forward(self, pixel_values: torch.Tensor, layout: VisionLayout) -> torch.Tensor:
        visual = self.visual
        hidden = visual.patch_embed(pixel_values)
        seq_len = hidden.shape[0]
        hidden = visual.permute_input_for_window_attn(hidden, layout.window_index, seq_len=seq_len)
        for number, block in enumerate(visual.blocks):
            groups = layout.full_groups if number in self.full_blocks else layout.window_groups
            hidden = hidden + _attention(block.attn, block.norm1(hidden), layout, groups)
            hidden = hidden + block.mlp(block.norm2(hidden))
        return visual.merger(hidden)[layout.reverse]


def _attention(
    attn: Any, hidden: torch.Tensor, layout: VisionLayout, groups: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """``Qwen2_5_VLVisionAttention`` over the segments in ``groups`` (bidirectional within a
    segment), one SDPA call per segment length."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    length = hidden.shape[0]
    qkv = attn.qkv(hidden).reshape(length, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
    query, key, value = qkv.unbind(0)
    query, key = apply_rotary_pos_emb_vision(query, key, layout.cos, layout.sin)
    out = torch.empty_like(query)  # (tokens, heads, head_dim)
    for index in groups:
        # (segments, heads, length, head_dim): every segment of this length in one call.
        q, k, v = (t[index].transpose(1, 2) for t in (query, key, value))
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
        out[index] = attended.transpose(1, 2)
    return attn.proj(out.reshape(length, -1))
