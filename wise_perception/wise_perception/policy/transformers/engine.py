"""Own decode loop for Qwen2.5-VL: static KV cache, per-row cursors, last-position logits.

Why not ``model.generate``: it syncs with the host several times per token (stopping
criteria), rebuilds masks and positions in Python every step, and cannot append several
known tokens in one forward (needed by the forced answer schema, :mod:`.forced_schema`). This
engine runs the model's own modules (embeddings, vision tower, decoder layers' projections,
norms and MLPs, ``lm_head``) with its own attention over a KV cache it owns:

* The cache is allocated once per batch size and kept (:class:`KVCache`): its tensors keep
  their addresses from one command to the next, which is what lets a captured CUDA graph
  write into them. Its length covers the longest request seen so far (prompt + token budget
  + the longest forced piece), rounded up to ``CACHE_BUCKET``; slots a request does not
  write are masked, and stale slots of an earlier request are never visible.
* Every row has its own cursor (its next cache slot), so rows can append different numbers of
  tokens in one forward (forced schema pieces); a row's unused input slots write into slots
  past its cursor, which stay masked and are overwritten by its next step.
* After the image, Qwen2.5-VL's M-RoPE positions of new tokens are the cache slot plus a
  constant per row (``rope delta - left padding``): a step needs only integer tensors, which is
  what lets a CUDA graph capture it.
* Logits are computed for one position per row only (the last real input of the step).
* Which token a row takes from its logits is an injected function (a :data:`TokenChooser`, as
  gpt-fast's ``sample``): :func:`greedy` by default. It gets each row's position in its
  completion as a device tensor, so a chooser that looks the token up (teacher forcing, in
  ``wise_dev``) adds no host sync to the free loop.
* Free decoding checks for the end (end-of-turn, stop strings) every ``check_every`` steps
  instead of after each one; end-of-turn is tracked on the device in between.
* A decode step has one of two widths: one token per row, or (forced schema) the decided
  token plus the longest forced piece, padded. Both are whole functions of integer tensors and
  the cache, from embedding to logits.

On CPU everything runs eagerly. On CUDA ``compile=True`` hands each step width to
``torch.compile(mode="reduce-overhead", fullgraph=True)`` (a CUDA graph per width), the prefill
to ``torch.compile`` with dynamic shapes (its length changes with the command) and the vision
tower (:mod:`.vision`) to ``torch.compile`` with static shapes. The tests trace the step with
``fullgraph=True`` on CPU, so a graph break fails there; the graphs themselves need a GPU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger(__name__)

# Cache length granularity: a longer request grows the cache by whole buckets (and a compiled
# step re-specialises once per new length, not per command).
CACHE_BUCKET = 256
# Batch sizes whose caches are kept (the node's 1 and the evaluator's batch, say).
KEPT_CACHES = 2
# Free decoding reads the generated tokens back to the host this often (end-of-turn and stop
# string checks); the steps generated after a row's real end are discarded.
DEFAULT_CHECK_EVERY = 8


TokenChooser = Callable[[Any, Any], Any]
"""``choose(logits, positions) -> tokens``: logits (B, V) of each row's next token, positions
(B,) how many tokens each row has generated before it (long, on the device); returns (B,)
token ids on the device."""


def greedy(logits: Any, positions: Any) -> Any:
    """The highest-scoring token of every row (the product decodes greedily, as the release)."""
    del positions
    return logits.argmax(-1)


@dataclass
class EngineResult:
    """Generated ids per row (after the prompt, ends included, nothing after the end), the
    number of sequential forward passes (prefill included) and when the first token was ready."""

    rows: list[list[int]]
    forward_passes: int
    first_token_time: float = 0.0
    passes_per_row: list[int] = field(default_factory=list)


class KVCache:
    """Per-layer key and value buffers, (batch, kv_heads, length, head_dim), kept across
    requests (see the module docstring)."""

    def __init__(self, layers: list[tuple[Any, Any]]) -> None:
        self.layers = layers

    @property
    def length(self) -> int:
        return int(self.layers[0][0].shape[2])

    @classmethod
    def allocate(
        cls, layers: int, shape: tuple[int, int, int, int], dtype: Any, device: Any, *, static: bool
    ) -> KVCache:
        import torch

        buffers = []
        for _ in range(layers):
            pair = (
                torch.zeros(shape, dtype=dtype, device=device),
                torch.zeros(shape, dtype=dtype, device=device),
            )
            if static:  # compiled steps (CUDA graphs) may write into these addresses
                for tensor in pair:
                    torch._dynamo.mark_static_address(tensor)
            buffers.append(pair)
        return cls(buffers)


class Qwen25VLEngine:
    """Greedy generation for a ``Qwen2_5_VLForConditionalGeneration`` with the loop above."""

    def __init__(self, model: Any, *, compile: bool = False) -> None:
        import torch

        from .vision import VisionTower

        self.model = model
        self.core = model.model
        self.lm = model.model.language_model
        self.config = self.lm.config
        text = self.config
        self.num_heads = text.num_attention_heads
        self.num_kv_heads = text.num_key_value_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.compile = bool(compile) and self.device.type == "cuda"
        self.vision = VisionTower(self.core.visual, compile=self.compile)
        # One request at a time uses them (the policy backend serialises generate calls).
        self._caches: OrderedDict[int, KVCache] = OrderedDict()
        self._prefill: Callable[..., Any] = self._forward
        self._steps: dict[int, Callable[..., Any]] = {}
        if self.compile:
            # The prompt's length changes with the command: dynamic shapes for the prefill.
            self._prefill = torch.compile(self._forward, dynamic=True)

    def step_function(self, width: int) -> Callable[..., Any]:
        """The decode step for ``width`` tokens per row (compiled once per width on CUDA)."""
        step = self._steps.get(width)
        if step is None:
            step = self._decode
            if self.compile:
                import torch

                step = torch.compile(self._decode, mode="reduce-overhead", fullgraph=True)
            self._steps[width] = step
        return step

    def cache_for(self, batch: int, length: int) -> KVCache:
        """The kept cache of ``batch`` rows, grown to at least ``length`` slots."""
        cache = self._caches.get(batch)
        if cache is None or cache.length < length:
            self._caches.pop(batch, None)
            shape = (batch, self.num_kv_heads, length, self.head_dim)
            layers = len(self.lm.layers)
            cache = KVCache.allocate(layers, shape, self.dtype, self.device, static=self.compile)
            self._caches[batch] = cache
            while len(self._caches) > KEPT_CACHES:
                self._caches.popitem(last=False)
        self._caches.move_to_end(batch)
        return cache

    # ------------------------------------------------------------------ model pieces

    def _attention(
        self,
        layer: Any,
        hidden: Any,
        cos: Any,
        sin: Any,
        k_cache: Any,
        v_cache: Any,
        slots: Any,
        mask: Any,
    ) -> Any:
        import torch
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

        attn = layer.self_attn
        bsz, length, _ = hidden.shape
        q = attn.q_proj(hidden).view(bsz, length, -1, self.head_dim).transpose(1, 2)
        k = attn.k_proj(hidden).view(bsz, length, -1, self.head_dim).transpose(1, 2)
        v = attn.v_proj(hidden).view(bsz, length, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if k_cache is None:  # prefill: attend within the prompt only, no cache-wide mask
            keys, values = k, v
        else:
            index = slots[:, None, :, None].expand(bsz, self.num_kv_heads, length, self.head_dim)
            k_cache.scatter_(2, index, k)
            v_cache.scatter_(2, index, v)
            keys, values = k_cache, v_cache
        out = torch.nn.functional.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, scale=self.scaling, enable_gqa=True
        )
        out = out.transpose(1, 2).reshape(bsz, length, -1)
        return attn.o_proj(out), k, v

    def _forward(
        self,
        embeds: Any,
        positions: Any,
        mask: Any,
        last: Any,
        caches: list[tuple[Any, Any]] | None,
        slots: Any,
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        """Decoder layers over ``embeds`` (B, L, H); returns logits at index ``last`` (B,) and
        the new keys/values per layer (used to fill the cache after the prefill)."""
        import torch

        hidden = embeds
        cos, sin = self.lm.rotary_emb(hidden, positions)
        new_kv = []
        for i, layer in enumerate(self.lm.layers):
            residual = hidden
            hidden = layer.input_layernorm(hidden)
            k_cache, v_cache = caches[i] if caches is not None else (None, None)
            hidden, k, v = self._attention(layer, hidden, cos, sin, k_cache, v_cache, slots, mask)
            new_kv.append((k, v))
            hidden = residual + hidden
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        picked = self.lm.norm(hidden[rows, last])
        return self.model.lm_head(picked).float(), new_kv

    # ------------------------------------------------------------------ prefill

    def _image_embeds(self, inputs: Any) -> Any:
        return self.vision(inputs["pixel_values"], inputs["image_grid_thw"])

    def prefill(self, inputs: Any, cache_len: int) -> tuple[Any, Any, Any, KVCache]:
        """Vision tower, prompt forward, cache filled. Returns first-token logits (B, V), the
        per-row position offsets (B,), the left padding (B,) and the cache."""
        import torch

        input_ids = inputs["input_ids"]
        attention_mask = inputs["attention_mask"].bool()
        bsz, length = input_ids.shape
        embeds = self.lm.embed_tokens(input_ids)
        if "pixel_values" in inputs:
            image = self._image_embeds(inputs).to(embeds.dtype)
            where = (input_ids == self.model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(where, image)
            positions, deltas = self.core.get_rope_index(
                input_ids,
                mm_token_type_ids=inputs["mm_token_type_ids"],
                image_grid_thw=inputs["image_grid_thw"],
                attention_mask=inputs["attention_mask"],
            )
        else:  # text only: 1-D positions of the real tokens
            text = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            positions = text[None].expand(3, -1, -1)
            deltas = torch.zeros(bsz, 1, dtype=torch.long, device=input_ids.device)
        padding = (~attention_mask).sum(-1)
        # New token at cache slot s of row b has M-RoPE position s - padding_b + delta_b.
        offsets = deltas.view(-1).to(input_ids.device) - padding
        # Causal within the prompt, padding keys hidden; each query also sees itself, so a
        # padding row has a key and never gives NaN (its outputs are never read).
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
        mask = (causal[None] & attention_mask[:, None, :]) | eye[None]
        last = torch.full((bsz,), length - 1, dtype=torch.long, device=input_ids.device)
        logits, new_kv = self._prefill(embeds, positions, mask[:, None], last, None, None)
        cache = self.cache_for(bsz, cache_len)
        for (k_cache, v_cache), (k, v) in zip(cache.layers, new_kv, strict=True):
            k_cache[:, :, :length] = k
            v_cache[:, :, :length] = v
        return logits, offsets, padding, cache

    # ------------------------------------------------------------------ steps

    def step(
        self,
        tokens: Any,
        counts: Any,
        cursors: Any,
        offsets: Any,
        padding: Any,
        cache: KVCache,
    ) -> Any:
        """Append ``tokens`` (B, L; row b uses its first ``counts[b]``) at each row's cursor;
        logits (B, V) after each row's last real token. Cursors are not advanced here."""
        step = self.step_function(int(tokens.shape[1]))
        return step(tokens, counts, cursors, offsets, padding, cache.layers)

    def _decode(
        self,
        tokens: Any,
        counts: Any,
        cursors: Any,
        offsets: Any,
        padding: Any,
        caches: list[tuple[Any, Any]],
    ) -> Any:
        """One decode step, embedding to logits: integer tensors and the cache in, logits out
        (the whole function is what a CUDA graph captures)."""
        import torch

        length = tokens.shape[1]
        cache_len = caches[0][0].shape[2]
        steps = torch.arange(length, device=tokens.device)
        slots = cursors[:, None] + steps[None]  # (B, L)
        positions = (slots + offsets[:, None])[None].expand(3, -1, -1)
        keys = torch.arange(cache_len, device=tokens.device)
        # Key slot visible to query j of row b: not padding, not after the query's own slot.
        mask = (keys[None, None] >= padding[:, None, None]) & (
            keys[None, None] <= slots[:, :, None]
        )
        embeds = self.lm.embed_tokens(tokens)
        logits, _ = self._forward(embeds, positions, mask[:, None], counts - 1, caches, slots)
        return logits

    # ------------------------------------------------------------------ generation

    def cache_length(self, prompt_len: int, max_new_tokens: int, extra: int = 0) -> int:
        need = prompt_len + max_new_tokens + extra + 1
        return -(-need // CACHE_BUCKET) * CACHE_BUCKET

    def generate(
        self,
        inputs: Any,
        *,
        max_new_tokens: int,
        eos_ids: set[int],
        pad_id: int,
        stop_check: Callable[[list[int]], bool] | None = None,
        check_every: int = DEFAULT_CHECK_EVERY,
        on_first_token: Callable[[], None] | None = None,
        choose: TokenChooser = greedy,
    ) -> EngineResult:
        """Free decoding, each token taken by ``choose`` (greedy). ``stop_check(row)`` says
        whether a row has ended on a stop string (checked on the host every ``check_every``
        steps)."""
        import torch

        input_ids = inputs["input_ids"]
        bsz, length = input_ids.shape
        device = input_ids.device
        caches_len = self.cache_length(length, max_new_tokens)
        logits, offsets, padding, caches = self.prefill(inputs, caches_len)
        eos = torch.tensor(sorted(eos_ids), device=device)
        out = torch.full((bsz, max_new_tokens), pad_id, dtype=torch.long, device=device)
        done = torch.zeros(bsz, dtype=torch.bool, device=device)
        cursors = torch.full((bsz,), length, dtype=torch.long, device=device)
        ones = torch.ones(bsz, dtype=torch.long, device=device)
        passes = 1
        produced = 0
        for i in range(max_new_tokens):
            token = torch.where(done, pad_id, choose(logits, cursors - length))
            if i == 0 and on_first_token is not None:
                on_first_token()
            out[:, i] = token
            done |= torch.isin(token, eos)
            produced = i + 1
            if produced == max_new_tokens:
                break
            if produced % check_every == 0 and self._finished(out, produced, done, stop_check):
                break
            logits = self.step(token[:, None], ones, cursors, offsets, padding, caches)
            cursors += 1
            passes += 1
        rows = [self._trim(row, eos_ids, stop_check) for row in out[:, :produced].tolist()]
        # Forward passes a row really needed: one per generated token (the last token needs
        # none after it); steps run after the end between two checks are not counted here.
        needed = [max(len(r), 1) for r in rows]
        return EngineResult(rows, max(needed), passes_per_row=needed)

    def generate_forced(
        self,
        inputs: Any,
        machines: Sequence[Any],
        *,
        max_new_tokens: int,
        eos_ids: set[int],
        pad_id: int,
        decode: Callable[[list[int]], str],
        stop_check: Callable[[list[int]], bool] | None = None,
        extra_slots: int = 0,
        on_first_token: Callable[[], None] | None = None,
        choose: TokenChooser = greedy,
    ) -> EngineResult:
        """Decoding with the forced answer schema (:mod:`.forced_schema`), each decided token
        taken by ``choose`` (greedy): after it a row's machine may name tokens to append; they
        go into the same forward as that token. The next piece depends on the decided token,
        so this loop reads one token per row back from the device after every forward (not
        every ``check_every``)."""
        import torch

        input_ids = inputs["input_ids"]
        bsz, length = input_ids.shape
        device = input_ids.device
        cache_len = self.cache_length(length, max_new_tokens, extra_slots)
        logits, offsets, padding, caches = self.prefill(inputs, cache_len)
        rows: list[list[int]] = [[] for _ in range(bsz)]
        done = [False] * bsz
        passes = [1] * bsz  # the prefill decides every row's first token
        cursors = torch.full((bsz,), length, dtype=torch.long, device=device)
        forward_count = 1
        first = True
        while True:
            # A row's position in its completion is its cursor past the prompt.
            decided = choose(logits, cursors - length).tolist()
            if first and on_first_token is not None:
                on_first_token()
            first = False
            appended: list[list[int]] = []
            for b in range(bsz):
                if done[b]:
                    appended.append([pad_id])
                    continue
                token = decided[b]
                row = rows[b]
                row.append(token)
                new = [token]
                ended = token in eos_ids or len(row) >= max_new_tokens
                if not ended:
                    forced = machines[b].feed(token, decode(row)) if machines[b] else []
                    room = max_new_tokens - len(row)
                    forced = forced[:room]
                    row.extend(forced)
                    new.extend(forced)
                    ended = (
                        len(row) >= max_new_tokens
                        or (machines[b] is not None and machines[b].finished)
                        or (stop_check is not None and stop_check(row))
                    )
                done[b] = ended
                appended.append([pad_id] if ended else new)
            if all(done):
                break
            # Two step widths only: one token per row, or the decided token + the longest
            # piece (padded), so a compiled engine replays two graphs, not one per piece.
            width = max(len(a) for a in appended)
            if width > 1:
                width = max(width, extra_slots)
            tokens = torch.full((bsz, width), pad_id, dtype=torch.long)
            for b, new in enumerate(appended):
                tokens[b, : len(new)] = torch.tensor(new)
            counts = torch.tensor([len(a) for a in appended], dtype=torch.long)
            # Finished rows feed one padding token at their cursor and do not advance.
            advance = torch.tensor(
                [0 if done[b] else len(appended[b]) for b in range(bsz)], dtype=torch.long
            )
            tokens, counts, advance = tokens.to(device), counts.to(device), advance.to(device)
            logits = self.step(tokens, counts, cursors, offsets, padding, caches)
            cursors += advance
            forward_count += 1
            for b in range(bsz):
                if not done[b]:
                    passes[b] += 1
        trimmed = [self._trim(row, eos_ids, stop_check) for row in rows]
        return EngineResult(trimmed, forward_count, passes_per_row=passes)

    @staticmethod
    def _trim(
        row: list[int], eos_ids: set[int], stop_check: Callable[[list[int]], bool] | None
    ) -> list[int]:
        """The row up to its end-of-turn token or the token that completed a stop string."""
        for i, token in enumerate(row):
            if token in eos_ids:
                row = row[: i + 1]
                break
        if stop_check is not None and stop_check(row):
            end = len(row)
            while end > 1 and stop_check(row[: end - 1]):
                end -= 1
            row = row[:end]
        return row

    @staticmethod
    def _finished(
        out: Any,
        produced: int,
        done: Any,
        stop_check: Callable[[list[int]], bool] | None,
    ) -> bool:
        """Host check (one sync): every row ended on end-of-turn or a stop string."""
        flags = done.tolist()
        if all(flags):
            return True
        if stop_check is None:
            return False
        rows = out[:, :produced].tolist()
        for b, row in enumerate(rows):
            if not flags[b] and stop_check(row):
                flags[b] = True
                done[b] = True
        return all(flags)
