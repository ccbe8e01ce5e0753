"""What the pipeline returns for one command: a plain object, no ROS and no torch inside.

The node, the CLI, the benchmark and the evaluator all consume this same object; ``to_json``
is the schema of the node's ``result`` topic and of the CLI's JSON file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from .core.answer import Box, Point
from .core.limits import COMPLETION_ECHO_CHARS, ECHO_CHARS, bounded

RESULT_SCHEMA_VERSION = 1


class Status(str, Enum):
    OK = "ok"
    INVALID_COMMAND = "invalid_command"  # empty, too long, not text
    INVALID_IMAGE = "invalid_image"  # unknown encoding, zero size, step/size mismatch, too large
    NO_IMAGE = "no_image"  # no frame (or none fresh enough) arrived in time
    QUEUE_FULL = "queue_full"  # rejected: the bounded command queue was full
    UNPARSABLE_ANSWER = "unparsable_answer"  # the policy's completion did not parse
    NOT_READY = "not_ready"  # models not loaded (node not active)
    POLICY_UNAVAILABLE = "policy_unavailable"  # the policy server cannot be reached (retry later)
    INTERNAL_ERROR = "internal_error"  # anything else; the message says what
    STOPPED = "stopped"  # a stop command (no segmentation): the running track, if any, ended


@dataclass
class Timings:
    """Seconds per stage (paper §4.3 wall-clock analysis). Encode overlaps policy decoding."""

    preprocess: float = 0.0
    policy_prefill: float = 0.0
    policy_decode: float = 0.0
    segmenter_encode: float = 0.0
    segmenter_decode: float = 0.0
    total: float = 0.0

    def as_ms(self) -> dict[str, float]:
        return {f"{k}_ms": round(v * 1000.0, 3) for k, v in self.__dict__.items()}


@dataclass
class ObjectResult:
    """One segmented object in original image pixels."""

    box: Box
    points: tuple[Point, ...]
    score: float
    mask: np.ndarray | None = field(default=None, repr=False)


def mask_union(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A result's mask: the union of its objects' masks (multi-object answers); empty when
    there are none."""
    out = np.zeros(shape, dtype=bool)
    for mask in masks:
        out |= np.asarray(mask, dtype=bool)
    return out


@dataclass
class Result:
    command: str
    status: Status
    error: str = ""
    rationale: str = ""  # the concise <think> text
    detailed_rationale: str = ""  # <d_think>, only in wise_f mode
    completion: str = ""  # raw policy output (for debugging and evaluation)
    reasoning_tokens: int = 0  # #Tok (paper §4)
    generated_tokens: int = 0
    objects: list[ObjectResult] = field(default_factory=list)
    mask: np.ndarray | None = field(default=None, repr=False)  # HxW bool, union of objects
    image_size: tuple[int, int] = (0, 0)  # (width, height)
    timings: Timings = field(default_factory=Timings)
    mode: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @classmethod
    def failure(cls, command: str, status: Status, error: str, **extra: Any) -> Result:
        return cls(command=command, status=status, error=error, **extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            # Echoes are bounded: a rejected 1 MB command must not come back as a 1 MB result.
            "command": bounded(self.command, ECHO_CHARS),
            "status": self.status.value,
            "error": self.error,
            "mode": self.mode,
            "rationale": self.rationale,
            "detailed_rationale": self.detailed_rationale,
            # What the model said, so an unparsable answer can be read (bounded).
            "completion": bounded(self.completion, COMPLETION_ECHO_CHARS),
            "reasoning_tokens": self.reasoning_tokens,
            "generated_tokens": self.generated_tokens,
            "image_size": list(self.image_size),
            "objects": [
                {
                    "box": [float(v) for v in o.box],
                    "points": [[float(x), float(y)] for x, y in o.points],
                    "score": float(o.score),
                }
                for o in self.objects
            ],
            "mask_pixels": int(self.mask.sum()) if self.mask is not None else 0,
            "timings": self.timings.as_ms(),
        }

    def to_json(self, **extra: Any) -> str:
        """JSON of :meth:`to_dict`, plus ``extra`` keys (the node adds stamp and frame_id)."""
        return json.dumps({**self.to_dict(), **extra})
