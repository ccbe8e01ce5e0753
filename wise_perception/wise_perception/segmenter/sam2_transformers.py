"""SAM2 through transformers (``Sam2Model`` + ``Sam2Processor``, Hugging Face folders, safetensors).

``encode`` runs the image encoder once per frame (``get_image_embeddings``); ``decode`` prompts
the mask decoder with each object's box and positive points (labels 1) in original image
pixels, asks for three masks (``multimask_output=True``) and keeps the one with the highest
predicted IoU, as the released evaluation.py does. Only the kept low-resolution mask is
upsampled to the original size.

On CUDA the image goes to the device as uint8 and is resized and normalised there (the
processor's torchvision backend), masks are upsampled and thresholded there, and both encode
and decode run on the segmenter's own stream (:class:`~wise_perception.device.SideStream`): the
encoder, started on a worker thread while the policy decodes, overlaps it instead of queueing
behind it on the default stream. ``compile=True`` (CUDA) compiles the image encoder (one input
shape, 1024x1024).

``tracker()`` follows an answer's objects through later frames with SAM2's video memory
(:mod:`.sam2_video`), loaded from the same checkpoint on first use and sharing this model's
image encoder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..backend_info import BackendInfo, dtype_name
from ..core.answer import ObjectPrompt
from ..device import SideStream
from .base import ImageEncoding, SegmentedObject, Segmenter
from .tracking import Tracker, TrackingUnsupported


class Sam2TransformersSegmenter(Segmenter):
    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: str = "cpu",
        name: str = "",
        compile: bool = False,
        video_model: Any = None,
    ) -> None:
        """``video_model``: a ``Sam2VideoModel`` for :meth:`tracker` (default: loaded from
        ``name`` on first use)."""
        self.model = model
        self.processor = processor
        self.device = device
        self.name = name
        self._info = BackendInfo(name, "transformers", str(device), dtype_name(model.dtype))
        self._stream = SideStream(device)
        self._video_model = video_model
        self._video_lock = threading.Lock()
        self._embed = model.get_image_embeddings
        if compile and str(device).startswith("cuda"):
            import torch

            self._embed = torch.compile(model.get_image_embeddings, dynamic=False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        dtype: Any = None,
        compile: bool = False,
    ) -> Sam2TransformersSegmenter:
        from transformers import Sam2Model, Sam2Processor

        from ..device import resolve_device, resolve_dtype
        from ..weights import raise_if_damaged

        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        source = str(path)
        try:
            model = Sam2Model.from_pretrained(source, dtype=torch_dtype, use_safetensors=True)
        except Exception as exc:
            raise_if_damaged(source, "SAM2", exc)  # names a truncated weights file
            raise
        model = model.to(device).eval()
        processor = Sam2Processor.from_pretrained(source)
        return cls(model, processor, device=device, name=source, compile=compile)

    def info(self) -> BackendInfo:
        return self._info

    @property
    def _dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    def encode(self, image: np.ndarray) -> ImageEncoding:
        import torch

        height, width = image.shape[:2]
        with self._stream.active(), torch.inference_mode():
            # channels_last said outright: left to guess, the processor reads a 3-pixel-high
            # image as channels-first and fails (1x1, 3x100 ... images are served as any other).
            # ``device``: resized to 1024x1024 and normalised on the device (81 ms for 720p on
            # a 2-core CPU).
            inputs = self.processor(
                images=image,
                input_data_format="channels_last",
                return_tensors="pt",
                device=self.device,
            )
            pixels = inputs["pixel_values"].to(self.device, dtype=self._dtype)
            embeddings = self._embed(pixels)
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
        # Everything on the segmenter's stream, the prompt's copies to the device included.
        with self._stream.active(), torch.inference_mode():
            kwargs = {
                key: inputs[key].to(self.device)
                for key in ("input_boxes", "input_points", "input_labels")
                if key in inputs
            }
            for key in ("input_boxes", "input_points"):
                if key in kwargs:
                    kwargs[key] = kwargs[key].to(self._dtype)
            out = self.model(image_embeddings=state["embeddings"], multimask_output=True, **kwargs)
            scores = out.iou_scores[0].float()  # (objects, masks)
            best = scores.argmax(dim=-1)  # (objects,)
            rows = torch.arange(len(objects), device=best.device)
            low_res = out.pred_masks[0, rows, best][None, :, None].float()  # (1, objects, 1, h, w)
            # Upsampled and thresholded on the device: only the boolean masks come back.
            (masks,) = self.processor.post_process_masks(low_res, state["original_sizes"])
            masks = masks[:, 0].cpu().numpy()
            picked = scores[rows, best].tolist()
        return [SegmentedObject(mask=masks[i], score=float(picked[i])) for i in range(len(objects))]

    def tracker(self) -> Tracker:
        """A tracker over this checkpoint's video memory (loaded once, on first use, sharing
        this model's image encoder). TrackingUnsupported when the checkpoint has none."""
        from .sam2_video import Sam2VideoTracker, load_video_model, video_processor_like

        with self._video_lock:
            if self.model is None:
                raise RuntimeError("segmenter is closed")
            if self._video_model is None:
                if not self.name:
                    raise TrackingUnsupported(
                        "this SAM2 was not loaded from a checkpoint, so it has no video memory "
                        "to load; pass video_model= when building it"
                    )
                self._video_model = load_video_model(
                    self.name, device=self.device, dtype=self._dtype, share_encoder_with=self.model
                )
            return Sam2VideoTracker(
                self._video_model,
                video_processor_like(self.processor.image_processor),
                device=self.device,
            )

    def close(self) -> None:
        self.model = None  # the pipeline gives the memory back (device.release_cuda_memory)
        self._video_model = None
