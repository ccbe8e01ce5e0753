"""SAM2 through Meta's ``sam2`` package (``build_sam2`` + ``SAM2ImagePredictor``, ``.pt`` files).

The same contract as the transformers backend: ``encode`` runs the image encoder once per frame;
``decode`` prompts the mask decoder with each object's box and positive points (labels 1) in
original image pixels, asks for three masks and keeps the one with the highest predicted IoU
(the released evaluation.py). On CUDA both run on the segmenter's own stream, so the encoder
can overlap the policy's generation on the default stream.

Checkpoints are Meta's ``{"model": state_dict}`` files (``sam2.1_hiera_{tiny,small,base_plus,
large}.pt``), read with ``torch.load(..., weights_only=True)``: tensors only, never arbitrary
pickled objects. The model config is taken from the file name or given explicitly (a config
name inside the ``sam2`` package, or a path to a Hydra ``.yaml`` of the same shape).

Install (not a plain dependency: PyPI's ``sam2`` 1.1.0 is a source tarball whose build asks for
``torch>=2.5.1``; with build isolation pip/uv would download a second torch and several GB of
CUDA packages just to build it)::

    uv pip install --no-build-isolation-package sam2 sam2==1.1.0   # where torch is installed
    pip install --no-build-isolation sam2==1.1.0                   # the same with pip

It also installs a top-level package named ``training``; nothing of ours may use that name.
"""

from __future__ import annotations

import copy
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..backend_info import BackendInfo, dtype_name
from ..core.answer import ObjectPrompt
from ..device import SideStream
from ..weights import REDOWNLOAD, first_line
from .base import ImageEncoding, SegmentedObject, Segmenter, check_rgb
from .tracking import Tracker, TrackingUnsupported

# Read in sam2 1.1.0: SAM2VideoPredictor.init_state(video_path) loads a whole MP4 file or a folder
# of JPEG files up front (utils/misc.py load_video_frames: "Only MP4 video and JPEG folder are
# supported"), and propagate_in_video runs over that fixed number of frames. Frames cannot be
# added one at a time, so a camera stream cannot be tracked through its public API.
TRACKING_UNSUPPORTED = (
    "Meta's sam2 package cannot track a live stream: its video predictor (SAM2VideoPredictor) "
    "takes a whole MP4 file or folder of JPEG frames when its state is made and propagates over "
    "exactly those frames; it has no way to add frames one at a time. Track with the "
    "transformers backend instead: a Hugging Face SAM2 folder (facebook/sam2.1-hiera-large, or "
    "this checkpoint converted with transformers' SAM2 conversion script)."
)
SAM2_INSTALL = "uv pip install --no-build-isolation-package sam2 sam2==1.1.0"
SAM2_MISSING = (
    "Meta's sam2 package is not installed. Install it into this environment (torch must already "
    f"be there) without build isolation: `{SAM2_INSTALL}` (or `pip install --no-build-isolation "
    "sam2==1.1.0`); with build isolation its build downloads another torch (several GB). "
    "Or convert the checkpoint to a transformers SAM2 folder and use that instead."
)

# Meta's release names -> the package's Hydra config names (SAM 2.1 and the original SAM 2).
_SIZE_LETTER = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
CONFIGS: dict[str, str] = {
    **{
        f"sam2.1_hiera_{size}": f"configs/sam2.1/sam2.1_hiera_{letter}.yaml"
        for size, letter in _SIZE_LETTER.items()
    },
    **{
        f"sam2_hiera_{size}": f"configs/sam2/sam2_hiera_{letter}.yaml"
        for size, letter in _SIZE_LETTER.items()
    },
}
# Matches the release name anywhere in a file name, "-" or "_" separated (hub copies are
# sometimes renamed, e.g. "my-sam2.1-hiera-large.pt"); the longest size names are tried first.
_RELEASE_NAME = re.compile(
    r"(sam2(?:\.1)?)[_-]hiera[_-](base[_-]plus|tiny|small|large)", flags=re.IGNORECASE
)

# Hydra keeps one process-wide config search path; loading a config file from outside the
# sam2 package swaps it for a moment, so loads are serialised.
_HYDRA_LOCK = threading.Lock()


class Sam2CheckpointError(ValueError):
    """A checkpoint that is not a readable SAM2 ``{"model": state_dict}`` for its config."""


def config_for_checkpoint(checkpoint: str | Path, config: str | Path | None = None) -> str:
    """The config to build ``checkpoint`` with: ``config`` when given (a package config name,
    a release name such as ``sam2.1_hiera_large``, or a ``.yaml`` path), else the release name
    in the file name. Raises ValueError when neither says."""
    if config not in (None, ""):
        text = str(config)
        if text in CONFIGS:
            return CONFIGS[text]
        if text.endswith((".yaml", ".yml")) and Path(text).is_file():
            return str(Path(text).resolve())
        if text in CONFIGS.values():
            return text
        raise ValueError(
            f"unknown SAM2 config {text!r}: give an existing .yaml file, a release name "
            f"({', '.join(CONFIGS)}) or a config of the sam2 package ({', '.join(CONFIGS.values())})"
        )
    match = _RELEASE_NAME.search(Path(checkpoint).name)
    if match is None:
        raise ValueError(
            f"{checkpoint}: the file name does not say which SAM2 model it is (Meta names them "
            "sam2.1_hiera_{tiny,small,base_plus,large}.pt); pass the config explicitly, e.g. "
            "segmenter_options={'config': 'sam2.1_hiera_large'} or a path to its .yaml"
        )
    version, size = match.group(1).lower(), match.group(2).lower().replace("-", "_")
    return CONFIGS[f"{version}_hiera_{size}"]


def load_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The state dict of a Meta SAM2 checkpoint, read with ``weights_only=True`` (no code runs)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAM2 checkpoint {path} not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):  # not torch's format at all: a damaged download
            raise Sam2CheckpointError(
                f"{path}: unreadable as a torch checkpoint (not torch's zip format): {REDOWNLOAD}"
            ) from exc
        # weights_only refuses anything but tensors and plain containers: say so, not just "bad".
        raise Sam2CheckpointError(
            f"{path}: refused as a weights-only torch checkpoint ({first_line(exc)}). Only "
            'tensor state dicts ({"model": state_dict}) are loaded; re-save the weights alone.'
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:  # not a torch zip/pickle, or truncated
        raise Sam2CheckpointError(
            f"{path}: not a readable torch checkpoint ({first_line(exc)}); {REDOWNLOAD}"
        ) from exc
    state = data.get("model") if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        keys = sorted(map(str, data))[:5] if isinstance(data, dict) else type(data).__name__
        raise Sam2CheckpointError(
            f'{path}: expected Meta\'s SAM2 format {{"model": state_dict}}, found {keys}'
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise Sam2CheckpointError(f"{path}: non-tensor entries in the state dict: {bad[:5]}")
    return state


def _import_sam2() -> tuple[Any, Any]:
    try:
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError as exc:
        raise ImportError(SAM2_MISSING) from exc
    return build_sam2, SAM2ImagePredictor


@contextmanager
def _hydra_search(config: str) -> Iterator[str]:
    """Yield the name ``build_sam2`` should compose: package configs as they are; a ``.yaml``
    file through Hydra's config-dir API, with the sam2 package's own set-up restored after."""
    if not Path(config).is_absolute():
        yield config
        return
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    # ``import sam2`` initialised Hydra on the package's configs; Hydra refuses a second
    # initialisation, so clear it, compose from the file's folder, then put sam2's back.
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(config).parent), version_base="1.2"):
            yield Path(config).name
    finally:
        GlobalHydra.instance().clear()
        initialize_config_module("sam2", version_base="1.2")


class Sam2MetaSegmenter(Segmenter):
    """``SAM2ImagePredictor`` behind the segmenter interface; one predictor state per frame."""

    def __init__(
        self,
        predictor: Any,
        *,
        device: str = "cpu",
        autocast_dtype: Any = None,
        name: str = "",
    ) -> None:

        self.predictor = predictor
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.name = name
        # The weights stay float32; autocast_dtype is what the matrix products run in.
        dtype = autocast_dtype if autocast_dtype is not None else "float32"
        self._info = BackendInfo(name, "sam2", str(device), dtype_name(dtype))
        self._stream = SideStream(device)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        config: str | Path | None = None,
        device: str | None = None,
        dtype: Any = None,
        mask_threshold: float = 0.0,
    ) -> Sam2MetaSegmenter:
        """Build the model from its config and load ``checkpoint`` (strictly: every key must
        match, so a wrong size is an error, not a silently random model)."""
        import torch

        from ..device import resolve_device, resolve_dtype

        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"SAM2 checkpoint {path} not found")
        config_name = config_for_checkpoint(path, config)  # before the slow imports: fail fast
        build_sam2, predictor_cls = _import_sam2()
        device = resolve_device(device)
        state = load_checkpoint_state(path)
        with _HYDRA_LOCK, _hydra_search(config_name) as name:
            # ckpt_path=None: random init here, weights loaded below with our own checks.
            model = build_sam2(name, ckpt_path=None, device="cpu", mode="eval")
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # same keys, other shapes: another model size
            raise Sam2CheckpointError(
                f"{path} does not fit config {config_name} (tensor shapes differ: is it another "
                f"model size? pass the matching config): {str(exc)[:300]}"
            ) from exc
        if missing or unexpected:
            raise Sam2CheckpointError(
                f"{path} does not fit config {config_name}: {len(missing)} missing keys "
                f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}; is it "
                "another model size? Pass the matching config."
            )
        del state
        model = model.to(device).eval()
        # Weights stay float32: Meta's predictor feeds float32 prompts and images, and its
        # documented reduced-precision mode is autocast, not casting the weights.
        torch_dtype = resolve_dtype(dtype, device)
        autocast = (
            torch_dtype if device.startswith("cuda") and torch_dtype != torch.float32 else None
        )
        predictor = predictor_cls(model, mask_threshold=mask_threshold)
        return cls(predictor, device=device, autocast_dtype=autocast, name=str(path))

    def info(self) -> BackendInfo:
        return self._info

    @contextmanager
    def _on_device(self) -> Iterator[None]:
        """Run on the segmenter's CUDA stream (if any) under autocast (if asked); wait only for
        that stream at the end, so results are ready without waiting for the policy's work."""
        import torch

        autocast = (
            torch.autocast(device_type="cuda", dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with self._stream.active(), autocast, torch.inference_mode():
            yield

    def encode(self, image: np.ndarray) -> ImageEncoding:
        if self.predictor is None:
            raise RuntimeError("segmenter is closed")
        check_rgb(image)
        height, width = image.shape[:2]
        # A shallow copy shares the model and transforms but owns the per-image state that
        # set_image fills (features, original size): the pipeline keeps encodings of several
        # frames and may decode an older one after a newer frame was encoded.
        frame = copy.copy(self.predictor)
        with self._on_device():
            frame.set_image(np.ascontiguousarray(image))
        return ImageEncoding(width=width, height=height, state=frame)

    def decode(self, encoding: ImageEncoding, objects: list[ObjectPrompt]) -> list[SegmentedObject]:
        if not objects:
            return []
        frame = encoding.state
        # One predictor call per group of objects with the same number of points (all objects
        # of one answer schema share it; mixed answers are grouped, order kept).
        results: list[SegmentedObject | None] = [None] * len(objects)
        groups: dict[int, list[int]] = {}
        for i, obj in enumerate(objects):
            groups.setdefault(len(obj.points), []).append(i)
        for n_points, indices in groups.items():
            group = [objects[i] for i in indices]
            for i, seg in zip(
                indices, self._decode_group(frame, encoding, group, n_points), strict=True
            ):
                results[i] = seg
        return [r for r in results if r is not None]

    def _decode_group(
        self, frame: Any, encoding: ImageEncoding, objects: list[ObjectPrompt], n_points: int
    ) -> list[SegmentedObject]:
        boxes = np.array([[float(v) for v in obj.box] for obj in objects], dtype=np.float32)
        points = (
            np.array(
                [[[float(x), float(y)] for x, y in obj.points] for obj in objects],
                dtype=np.float32,
            )
            if n_points
            else None
        )
        if not np.isfinite(boxes).all() or (points is not None and not np.isfinite(points).all()):
            raise ValueError("SAM2 prompts must be finite pixel coordinates")
        with self._on_device():
            masks, scores, _ = frame.predict(
                point_coords=points,
                point_labels=np.ones((len(objects), n_points), dtype=np.int64)
                if n_points
                else None,
                box=boxes,
                multimask_output=True,
                normalize_coords=True,  # prompts are in original image pixels
            )
        # predict drops the object axis for a single object: put it back.
        masks = masks.reshape(len(objects), -1, encoding.height, encoding.width)
        scores = scores.reshape(len(objects), -1)
        best = scores.argmax(axis=1)
        return [
            SegmentedObject(mask=masks[i, best[i]].astype(bool), score=float(scores[i, best[i]]))
            for i in range(len(objects))
        ]

    def tracker(self) -> Tracker:
        raise TrackingUnsupported(TRACKING_UNSUPPORTED)

    def close(self) -> None:
        self.predictor = None  # the pipeline gives the memory back (device.release_cuda_memory)
