"""SAM2 through transformers (``Sam2Model`` + ``Sam2Processor``, Hugging Face folders, safetensors).

``encode`` runs the image encoder once per frame (``get_image_embeddings``); ``decode`` prompts
the mask decoder with each object's box and positive points (labels 1) in original image
pixels, asks for three masks (``multimask_output=True``) and keeps the one with the highest
predicted IoU, as the released evaluation.py does. Only the kept low-resolution mask is
upsampled to the original size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.answer import ObjectPrompt
from .base import ImageEncoding, SegmentedObject, Segmenter


class Sam2TransformersSegmenter(Segmenter):
    def __init__(self, model: Any, processor: Any, *, device: str = "cpu", name: str = "") -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.name = name

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | None = None, dtype: Any = None
    ) -> Sam2TransformersSegmenter:
        from transformers import Sam2Model, Sam2Processor

        from ..device import resolve_device, resolve_dtype

        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        source = str(path)
        model = Sam2Model.from_pretrained(source, dtype=torch_dtype, use_safetensors=True)
        model = model.to(device).eval()
        processor = Sam2Processor.from_pretrained(source)
        return cls(model, processor, device=device, name=source)

    @property
    def _dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    def encode(self, image: np.ndarray) -> ImageEncoding:
        import torch

        height, width = image.shape[:2]
        # channels_last said outright: left to guess, the processor reads a 3-pixel-high image
        # as channels-first and fails (1x1, 3x100 ... images are served like any other).
        inputs = self.processor(
            images=image, input_data_format="channels_last", return_tensors="pt"
        )
        pixels = inputs["pixel_values"].to(self.device, dtype=self._dtype)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixels)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return ImageEncoding(
            width=width,
            height=height,
            state={"embeddings": embeddings, "original_sizes": inputs["original_sizes"]},
        )

    def decode(self, encoding: ImageEncoding, objects: list[ObjectPrompt]) -> list[SegmentedObject]:
        if not objects:
            return []
        # One decoder call per group of objects with the same number of points (all objects
        # of one answer schema share it; mixed answers are grouped, order kept).
        results: list[SegmentedObject | None] = [None] * len(objects)
        groups: dict[int, list[int]] = {}
        for i, obj in enumerate(objects):
            groups.setdefault(len(obj.points), []).append(i)
        for n_points, indices in groups.items():
            for i, seg in zip(
                indices,
                self._decode_group(encoding, [objects[i] for i in indices], n_points),
                strict=True,
            ):
                results[i] = seg
        return [r for r in results if r is not None]

    def _decode_group(
        self, encoding: ImageEncoding, objects: list[ObjectPrompt], n_points: int
    ) -> list[SegmentedObject]:
        import torch

        state = encoding.state
        prompt: dict[str, Any] = {
            "original_sizes": state["original_sizes"],
            "input_boxes": [[[float(v) for v in obj.box] for obj in objects]],
            "return_tensors": "pt",
        }
        if n_points:
            prompt["input_points"] = [
                [[[float(x), float(y)] for x, y in obj.points] for obj in objects]
            ]
            prompt["input_labels"] = [[[1] * n_points for _ in objects]]
        inputs = self.processor(**prompt)
        kwargs = {
            key: inputs[key].to(self.device)
            for key in ("input_boxes", "input_points", "input_labels")
            if key in inputs
        }
        for key in ("input_boxes", "input_points"):
            if key in kwargs:
                kwargs[key] = kwargs[key].to(self._dtype)
        with torch.inference_mode():
            out = self.model(image_embeddings=state["embeddings"], multimask_output=True, **kwargs)
            scores = out.iou_scores[0].float()  # (objects, masks)
            best = scores.argmax(dim=-1)  # (objects,)
            rows = torch.arange(len(objects), device=best.device)
            low_res = out.pred_masks[0, rows, best][None, :, None].float()  # (1, objects, 1, h, w)
            masks = self.processor.post_process_masks(low_res.cpu(), state["original_sizes"].cpu())[
                0
            ]
        return [
            SegmentedObject(mask=masks[i, 0].numpy().astype(bool), score=float(scores[i, best[i]]))
            for i in range(len(objects))
        ]

    def close(self) -> None:
        self.model = None  # the pipeline gives the memory back (device.release_cuda_memory)
