"""SAM2 tracking through transformers' streaming video model (``Sam2VideoModel``).

The session is transformers' own (``Sam2VideoProcessor.init_video_session`` with frames added
one at a time, ``model(inference_session=..., frame=...)``), so the masks are exactly those of
its streaming API. What this class adds is the bound on memory: transformers' session keeps
every frame it was given (the preprocessed pixels, and per object every tracked frame's
outputs, full-resolution mask logits included), which grows without end on a camera stream.
After each frame the tracker drops what SAM2 never reads again:

* the frame's pixels (its image features are cached for the frame being processed only);
* tracked frames older than the memory bank reads: the last ``num_maskmem - 1`` frames'
  memories and the last ``max_object_pointers_in_encoder - 1`` frames' object pointers
  (SAM2 paper §4 and its released configs: 7 memories, 16 pointers); older frames' memories
  but not yet their pointers, where the pointer window is the longer one;
* per-frame mask logits (the memory encoder has already consumed them).

The seed (conditioning) frame stays for the whole track, as in SAM2. What is kept is exactly
what the next frame reads, so the masks equal those of the unbounded session (tested).

A Hugging Face SAM2 checkpoint (``facebook/sam2.1-hiera-*``) holds the video memory weights next
to the image model's: one folder serves both. A folder saved as an image-only ``Sam2Model`` has
none, and tracking with random memory weights would be noise: that is refused
(:class:`~.tracking.TrackingUnsupported`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.answer import ObjectPrompt
from ..device import SideStream
from .base import check_rgb
from .tracking import MemoryInfo, TrackedObject, Tracker, TrackingUnsupported, TrackStep, mask_box

# Sam2VideoModel's top-level modules and parameters that only the video memory uses: what an
# image-only checkpoint lacks (Sam2Model ignores exactly these when it loads a video one).
MEMORY_MODULES = frozenset(
    {
        "memory_attention",
        "memory_encoder",
        "memory_temporal_positional_encoding",
        "object_pointer_proj",
        "mask_downsample",
        "no_object_pointer",
        "no_memory_positional_encoding",
        "occlusion_spatial_embedding_parameter",
        "temporal_positional_encoding_projection_layer",
    }
)
# Per-frame outputs SAM2 reads again on later frames; everything else is dropped after a frame.
_MEMORY_KEYS = ("maskmem_features", "maskmem_pos_enc")
_POINTER_KEYS = ("object_pointer",)


def video_processor_like(image_processor: Any) -> Any:
    """A ``Sam2VideoProcessor`` around the image segmenter's own image processor (same input
    size and normalisation); streaming uses only its image side and its prompt encoding."""
    from transformers import Sam2VideoProcessor, Sam2VideoVideoProcessor

    size = {"height": image_processor.size["height"], "width": image_processor.size["width"]}
    return Sam2VideoProcessor(
        image_processor=image_processor, video_processor=Sam2VideoVideoProcessor(size=size)
    )


def load_video_model(
    source: str | Path,
    *,
    device: str,
    dtype: Any,
    share_encoder_with: Any = None,
) -> Any:
    """``Sam2VideoModel`` from a Hugging Face folder or hub id, on ``device``.

    ``share_encoder_with``: an image ``Sam2Model`` loaded from the same checkpoint; when its
    image encoder holds the same weights, the video model uses that module instead of a second
    copy (the encoder is nearly all of SAM2-Large's weights). Raises
    :class:`~.tracking.TrackingUnsupported` when the checkpoint has no video memory weights.
    """
    from transformers import Sam2VideoModel

    from ..weights import raise_if_damaged

    try:
        model, info = Sam2VideoModel.from_pretrained(
            str(source), dtype=dtype, use_safetensors=True, output_loading_info=True
        )
    except Exception as exc:
        raise_if_damaged(str(source), "SAM2", exc)  # names a truncated weights file
        raise
    missing = sorted(k for k in info["missing_keys"] if k.split(".")[0] in MEMORY_MODULES)
    if missing:
        raise TrackingUnsupported(
            f"{source} has no SAM2 video memory weights ({len(missing)} missing, e.g. "
            f"{missing[0]}): it was saved as an image-only Sam2Model. Tracking needs a SAM2 "
            "checkpoint with its memory (the facebook/sam2.1-hiera-* folders have it), or a "
            "folder saved from a trained Sam2VideoModel."
        )
    shared = getattr(share_encoder_with, "vision_encoder", None)
    if shared is not None and _same_weights(model.vision_encoder, shared):
        model.vision_encoder = shared
    return model.to(device).eval()


def _same_weights(a: Any, b: Any) -> bool:
    import torch

    params_a, params_b = dict(a.named_parameters()), dict(b.named_parameters())
    if params_a.keys() != params_b.keys():
        return False
    return all(
        params_a[k].shape == params_b[k].shape
        and torch.equal(params_a[k], params_b[k].to(params_a[k].device, params_a[k].dtype))
        for k in params_a
    )


class Sam2VideoTracker(Tracker):
    """One track over ``Sam2VideoModel``'s streaming session, memory bounded (module doc)."""

    def __init__(self, model: Any, processor: Any, *, device: str = "cpu") -> None:
        self.model = model
        self.processor = processor
        self.device = device
        config = model.config
        # SAM2 reads the last num_maskmem - 1 tracked frames' memories and the last
        # max_object_pointers_in_encoder - 1 frames' object pointers (Sam2VideoModel).
        self.memory_window = max(int(config.num_maskmem) - 1, 0)
        self.pointer_window = max(int(config.max_object_pointers_in_encoder) - 1, 0)
        self._stream = SideStream(device)
        self._session: Any = None
        self._index = -1
        self._size: tuple[int, int] | None = None  # (height, width) of the seed frame

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | None = None, dtype: Any = None
    ) -> Sam2VideoTracker:
        """A tracker over a SAM2 folder or hub id of its own (no image segmenter to share)."""
        from transformers import Sam2Processor

        from ..device import resolve_device, resolve_dtype

        device = resolve_device(device)
        model = load_video_model(path, device=device, dtype=resolve_dtype(dtype, device))
        processor = video_processor_like(Sam2Processor.from_pretrained(str(path)).image_processor)
        return cls(model, processor, device=device)

    @property
    def _dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    @property
    def frames_seen(self) -> int:
        """Frames processed in this track, the seed frame included."""
        return self._index + 1

    def start(
        self,
        image: np.ndarray,
        objects: Sequence[ObjectPrompt],
        masks: Sequence[np.ndarray] | None = None,
    ) -> TrackStep:
        check_rgb(image)
        if not objects:
            raise ValueError("nothing to track: the answer has no objects")
        height, width = image.shape[:2]
        if masks is not None:
            masks = [np.asarray(m, dtype=bool) for m in masks]
            if len(masks) != len(objects) or any(m.shape != (height, width) for m in masks):
                raise ValueError(
                    f"seed masks must be one {height}x{width} mask per object ({len(objects)})"
                )
        self.close()
        session = self.processor.init_video_session(inference_device=self.device, dtype=self._dtype)
        ids = list(range(1, len(objects) + 1))
        if masks is not None:
            # A copy: the session keeps the list as its "new inputs" and empties it.
            self.processor.add_inputs_to_inference_session(
                session, frame_idx=0, obj_ids=list(ids), input_masks=masks
            )
        else:
            for obj_id, obj in zip(ids, objects, strict=True):
                self.processor.add_inputs_to_inference_session(
                    session,
                    frame_idx=0,
                    obj_ids=obj_id,
                    original_size=(height, width),
                    **_prompt(obj),
                )
            # One call per object (objects may have different numbers of points, which one
            # call would pad); each call names only its own object as new.
            session.obj_with_new_inputs = list(ids)
        self._session = session
        self._size = (height, width)
        step = self._advance(image)
        if masks is not None:
            # SAM2 passes a mask prompt through as the frame's output (resampled to its input
            # size and back): the seed frame's masks are the given ones, exactly.
            for obj, mask in zip(step.objects, masks, strict=True):
                obj.mask, obj.box = mask, mask_box(mask)
            step.mask = np.any(masks, axis=0)
        return step

    def step(self, image: np.ndarray) -> TrackStep:
        if self._session is None:
            raise RuntimeError("the tracker has no track: call start first")
        check_rgb(image)
        if image.shape[:2] != self._size:
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]}, the track started on "
                f"{self._size[1]}x{self._size[0]}: a track keeps one frame size"
            )
        return self._advance(image)

    def _advance(self, image: np.ndarray) -> TrackStep:
        import torch

        started = time.perf_counter()
        index = self._index + 1
        if not image.flags.writeable:  # torch refuses to wrap read-only arrays (PIL's)
            image = image.copy()
        with self._stream.active(), torch.inference_mode():
            inputs = self.processor(
                images=image,
                input_data_format="channels_last",
                return_tensors="pt",
                device=self.device,
            )
            output = self.model(
                inference_session=self._session,
                frame=inputs["pixel_values"][0],
                frame_idx=index,
            )
            self._forget(index)
            (masks,) = self.processor.post_process_masks(
                [output.pred_masks], original_sizes=inputs["original_sizes"], binarize=True
            )
            masks = masks[:, 0].cpu().numpy()  # (objects, H, W) bool
            scores = torch.sigmoid(output.object_score_logits.float()).reshape(-1).tolist()
        self._index = index
        objects = [
            TrackedObject(mask=mask, box=mask_box(mask), score=float(score))
            for mask, score in zip(masks, scores, strict=True)
        ]
        return TrackStep(
            index=index,
            objects=objects,
            mask=masks.any(axis=0),
            seconds=time.perf_counter() - started,
        )

    def _forget(self, index: int) -> None:
        """Drop what no later frame reads (module doc). Frame ``index + 1`` reads tracked
        frames ``index + 1 - k`` for k up to the memory and pointer windows."""
        session = self._session
        session.processed_frames.clear()
        oldest_memory = index + 1 - self.memory_window
        oldest_pointer = index + 1 - max(self.memory_window, self.pointer_window)
        for outputs in session.output_dict_per_obj.values():
            for frame in outputs["cond_frame_outputs"].values():
                frame.pop("high_res_masks", None)
            tracked = outputs["non_cond_frame_outputs"]
            for frame_idx in list(tracked):
                if frame_idx < oldest_pointer:
                    del tracked[frame_idx]
                    continue
                keep = _POINTER_KEYS + (_MEMORY_KEYS if frame_idx >= oldest_memory else ())
                for key in [k for k in tracked[frame_idx] if k not in keep]:
                    del tracked[frame_idx][key]
        for frames in session.frames_tracked_per_obj.values():
            for frame_idx in [f for f in frames if f != index]:
                del frames[frame_idx]

    def memory(self) -> MemoryInfo:
        session = self._session
        if session is None:
            return MemoryInfo(0, 0, 0)
        per_obj = session.output_dict_per_obj.values()
        return MemoryInfo(
            conditioning_frames=max((len(o["cond_frame_outputs"]) for o in per_obj), default=0),
            memory_frames=max((len(o["non_cond_frame_outputs"]) for o in per_obj), default=0),
            state_bytes=_tensor_bytes(
                [
                    session.processed_frames,
                    session.cache._vision_features,
                    session.output_dict_per_obj,
                    session.point_inputs_per_obj,
                    session.mask_inputs_per_obj,
                    session.frames_tracked_per_obj,
                ]
            ),
        )

    def close(self) -> None:
        self._session = None
        self._index = -1
        self._size = None


def _prompt(obj: ObjectPrompt) -> dict[str, Any]:
    """One object's box and positive points (labels 1), nested as the processor expects
    (image, object, point, xy)."""
    prompt: dict[str, Any] = {"input_boxes": [[[float(v) for v in obj.box]]]}
    if obj.points:
        prompt["input_points"] = [[[[float(x), float(y)] for x, y in obj.points]]]
        prompt["input_labels"] = [[[1] * len(obj.points)]]
    return prompt


def _tensor_bytes(value: Any) -> int:
    """Bytes of every tensor inside nested dicts, lists and tuples."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(v) for v in value)
    return 0
