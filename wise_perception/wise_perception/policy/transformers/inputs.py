"""The policy's model inputs for a batch of (policy-frame image, rendered prompt), built on its
device.

What ``processor(text=..., images=..., padding=True)`` does for every command, split by what
it depends on:

* Pixels: transformers' torchvision image processor runs on the policy's device (its
  ``device`` argument): the frame goes up as uint8 and is rescaled, normalised and cut into
  patches there, instead of on the CPU (84 ms for an 840x840 frame on a 2-core CPU,
  PERFORMANCE.md).
* Token ids: they depend only on the prompt text and the image grid, so they are tokenized
  once per (prompt, grid) and kept; a batch is left-padded here.

Both halves call the processor's own methods (``replace_image_token``,
``get_text_with_replacements``, the tokenizer, ``create_mm_token_type_ids``), so the result
equals the processor's (tests: ids exactly, pixels within float tolerance).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

# Prompts whose token ids are kept (the node sends the same few commands; evaluation many).
IDS_CACHE_SIZE = 1024


class PolicyInputs:
    """``inputs(images, texts)`` -> ``BatchFeature`` on ``device``: ``input_ids``,
    ``attention_mask``, ``mm_token_type_ids``, ``pixel_values``, ``image_grid_thw``."""

    def __init__(self, processor: Any, device: str) -> None:
        from transformers.image_processing_backends import TorchvisionBackend

        self.processor = processor
        self.device = device
        # The PIL backend has no device: it processes on the CPU and the result is moved.
        self.on_device = isinstance(processor.image_processor, TorchvisionBackend)
        self._ids: OrderedDict[tuple[str, str], tuple[list[int], list[int]]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> Any:
        import torch
        from transformers import BatchFeature

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} prompts")
        pixels = self._pixels(images)
        rows = [
            self._token_ids(text, self.processor.replace_image_token(pixels, image_idx=i))
            for i, text in enumerate(texts)
        ]
        width = max(len(ids) for ids, _ in rows)
        pad_id = self.processor.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        mm_types = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (ids, types) in enumerate(rows):  # left padding: the prompt ends the row
            input_ids[b, width - len(ids) :] = torch.tensor(ids)
            attention_mask[b, width - len(ids) :] = 1
            mm_types[b, width - len(types) :] = torch.tensor(types)
        text_inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": mm_types,
        }
        data = {k: v.to(self.device) for k, v in text_inputs.items()}
        data["pixel_values"] = pixels["pixel_values"].to(self.device)
        data["image_grid_thw"] = pixels["image_grid_thw"].to(self.device)
        return BatchFeature(data)

    def _pixels(self, images: Sequence[np.ndarray]) -> Any:
        kwargs: dict[str, Any] = {"return_tensors": "pt", "input_data_format": "channels_last"}
        if self.on_device:
            kwargs["device"] = self.device
        return self.processor.image_processor(list(images), **kwargs)

    def _token_ids(self, text: str, replacement: str) -> tuple[list[int], list[int]]:
        """Token ids and multimodal token types of one prompt whose image placeholder expands
        to ``replacement`` (which encodes the grid)."""
        key = (text, replacement)
        with self._lock:
            cached = self._ids.get(key)
            if cached is not None:
                self._ids.move_to_end(key)
                return cached
        processor = self.processor
        (expanded,), _ = processor.get_text_with_replacements([text], [replacement])
        ids = processor.tokenizer(expanded)["input_ids"]
        types = processor.create_mm_token_type_ids([ids])[0]
        entry = (list(ids), list(types))
        with self._lock:
            self._ids[key] = entry
            while len(self._ids) > IDS_CACHE_SIZE:
                self._ids.popitem(last=False)
        return entry

    def cached_prompts(self) -> int:
        with self._lock:
            return len(self._ids)
