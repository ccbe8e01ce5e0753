"""The pipeline as the node uses it: what the node calls, and how its settings load one.

The node never imports torch or a model: :func:`load` imports the pipeline when the node
activates, and the pipeline frees the models and their GPU memory on ``close``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Protocol

from ..core.limits import CheckedImage
from ..core.prompts import Question
from ..result import Result
from ..tracking import Track, TrackSettings, TrackUpdate
from .settings import Settings


class NodePipeline(Protocol):
    """What the node needs from :class:`wise_perception.pipeline.WisePipeline`."""

    def segment(
        self, image: CheckedImage, command: Question, *, frame_key: Hashable | None = None
    ) -> Result: ...

    def encode_ahead(self, image: CheckedImage, frame_key: Hashable) -> Future[Any]: ...

    def track(
        self,
        image: CheckedImage,
        result: Result,
        settings: TrackSettings | None = None,
        *,
        at: float | None = None,
    ) -> tuple[Track, TrackUpdate]: ...

    def cache_info(self) -> dict[str, int]: ...

    def warmup(self) -> Result: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


PipelineFactory = Callable[[Settings], NodePipeline]


def load(settings: Settings) -> NodePipeline:
    """The production pipeline: loads the models named by the settings (minutes for a 7B).

    Empty ``segmenter_model``, ``mode``, ``brevity`` and ``max_new_tokens: 0`` mean "the
    checkpoint's manifest, else the pipeline's default" (an exported WISE checkpoint names its
    segmenter, mode and budget). The node's input limits are the pipeline's, so what the node
    accepts the pipeline serves without checking it again.
    """
    from ..pipeline import WisePipeline
    from ..sources import CheckpointUnavailable

    try:
        return WisePipeline.from_parameters(settings)  # the bag replay loads with the same call
    except CheckpointUnavailable as exc:  # name what a node user sets
        setting = {"policy": "policy_model", "segmenter": "segmenter_model"}[exc.role]
        make = {"policy": "MODEL", "segmenter": "SEGMENTER"}[exc.role]
        raise exc.naming(
            f"the node parameter {setting!r}", f"with make: `make run {make}=/path/to/folder`"
        ) from None


def describe(pipeline: NodePipeline) -> tuple[dict[str, Any], str]:
    """What was loaded (``pipeline.describe()``) and "", or {} and why it could not be said:
    describing is for the log and never fails an activation."""
    try:
        return pipeline.describe(), ""
    except Exception as exc:
        return {}, f"{type(exc).__name__}: {exc}"


def encodes_ahead(settings: Settings, info: dict[str, Any]) -> bool:
    """Whether the node encodes the newest frame while idle. ``auto``: where SAM2 runs on
    CUDA (as ``info``, the pipeline's description, says); on a CPU the encoding would take the
    cores that the next command's inference needs."""
    if settings.encode_ahead == "auto":
        segmenter = info.get("segmenter") or {}
        return str(segmenter.get("device", "")).startswith("cuda")
    return settings.encode_ahead == "true"


def summary(info: dict[str, Any]) -> str:
    """What was loaded, resolved (policy, segmenter, mode, device, dtype), for the log."""
    parts = []
    for role in ("policy", "segmenter"):
        part = info.get(role) or {}
        parts.append(
            f"{role}={part.get('name', '')} ({part.get('backend', '')}, "
            f"device={part.get('device', '')}, dtype={part.get('dtype', '')})"
        )
    extras = " ".join(f"{k}={info[k]}" for k in ("mode", "brevity", "max_new_tokens") if k in info)
    return " ".join([*parts, extras])
