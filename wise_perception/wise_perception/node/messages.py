"""ROS message conversions for the node: sensor_msgs/Image <-> numpy, command messages ->
checked commands, Result -> every message it publishes.

No cv_bridge (not available from any registry the tests use): 8-bit encodings are converted
with numpy, honouring row padding (``step`` > ``width * channels``). ``is_bigendian`` is
irrelevant for 8-bit data. Anything else is rejected with an :class:`ImageError` whose message
names the problem; the node turns it into an ``invalid_image`` result.

Commands (:func:`parse_command`) are plain text, or a JSON object
``{"id": "pick-7", "command": "the red cup"}`` whose ``id`` (a string of at most
:data:`MAX_ID_CHARS` characters, or a number) is echoed in the command's result so a caller
can match results to commands. Sizes are checked with the same ``core`` functions and limits
the pipeline uses, once: a valid command comes out as a ``core.prompts.Question``, which the
pipeline does not check again.

``vision_msgs`` is optional: :data:`HAVE_VISION_MSGS` says whether Detection2DArray can be
built (a ROS 2 install usually has it; the PyPI wheels used in tests do not).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from ..core.limits import image_size_problem
from ..core.prompts import Question, check_question
from ..result import Result
from ..visualize import mask_to_uint8, overlay

try:  # optional: only where vision_msgs is installed
    from vision_msgs.msg import (  # type: ignore[import-not-found]
        Detection2D,
        Detection2DArray,
        ObjectHypothesisWithPose,
    )

    HAVE_VISION_MSGS = True
except ImportError:  # pragma: no cover - depends on the ROS install
    HAVE_VISION_MSGS = False

# encoding -> (channels, index of R, G, B in a pixel); mono is expanded to three channels.
ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}

# A caller's id is a handle, not a payload: long enough for a UUID with a prefix.
MAX_ID_CHARS = 128
# A command message may carry JSON escapes (``\\uXXXX`` is 6 characters for 1), an id and
# some blanks; one longer than this is refused unread, so its size costs only its length.
_JSON_OVERHEAD = 8
_COMMAND_KEYS = frozenset({"id", "command"})


class ImageError(ValueError):
    """An image the node cannot use; the message says why (reported as ``invalid_image``)."""


def check_image(msg: Image, max_pixels: int = 0) -> None:
    """Validate an Image's metadata and buffer size without copying pixels.

    Raises :class:`ImageError` for an unsupported encoding, a zero-size image, a ``step``
    shorter than a row, a buffer whose length is not ``step * height``, or more than
    ``max_pixels`` pixels (0 = no limit).
    """
    encoding = msg.encoding.strip().lower()
    if encoding not in ENCODINGS:
        raise ImageError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}"
        )
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    # The pipeline's own size rule and limit, so an image accepted here is accepted there.
    problem = image_size_problem(width, height, max_pixels)
    if problem:
        raise ImageError(problem)
    channels = ENCODINGS[encoding][0]
    if step < width * channels:
        raise ImageError(
            f"step {step} is shorter than a row of {width} {encoding} pixels ({width * channels} bytes)"
        )
    if len(msg.data) != step * height:
        raise ImageError(
            f"data has {len(msg.data)} bytes but step*height = {step}*{height} = {step * height}"
        )


def image_to_rgb(msg: Image, max_pixels: int = 0) -> np.ndarray:
    """HxWx3 uint8 RGB (C-contiguous, owning its memory) from an 8-bit sensor_msgs/Image,
    checked first (:func:`check_image`)."""
    check_image(msg, max_pixels)
    return checked_to_rgb(msg)


def checked_to_rgb(msg: Image) -> np.ndarray:
    """:func:`image_to_rgb` of a message that has passed :func:`check_image` (the node checks
    a frame on receipt and converts it later, once, when it is used)."""
    encoding = msg.encoding.strip().lower()
    channels, (r, g, b) = ENCODINGS[encoding]
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if encoding == "rgb8":
        return np.array(pixels, copy=True)  # detach from the message buffer
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, [r, g, b]])


def numpy_to_image(array: np.ndarray, encoding: str, header: Header) -> Image:
    """An Image (no padding) from HxW (mono8) or HxWx3 (rgb8/bgr8) or HxWx4 uint8 arrays."""
    if encoding not in ENCODINGS:
        raise ImageError(f"cannot encode {encoding!r}; supported: {', '.join(ENCODINGS)}")
    channels = ENCODINGS[encoding][0]
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ImageError(f"{encoding} needs uint8 pixels, got {array.dtype}")
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ImageError(
            f"{encoding} needs {channels} channel(s), got an array of shape {array.shape}"
        )
    height, width = array.shape[:2]
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(width * channels)
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """mono8 mask, 255 inside the object(s) and 0 elsewhere (Isaac ROS / yolo_ros convention)."""
    return numpy_to_image(mask_to_uint8(mask, mask.shape), "mono8", header)


def header_of(stamp: Time, frame_id: str) -> Header:
    header = Header()
    header.stamp = stamp
    header.frame_id = frame_id
    return header


def stamp_to_dict(stamp: Time) -> dict[str, int]:
    return {"sec": int(stamp.sec), "nanosec": int(stamp.nanosec)}


@dataclass(frozen=True)
class Command:
    """A command message, read: its text as sent (for the echo), the caller's id, and either
    the checked command (``question``) or why it is invalid (``error``)."""

    text: str
    id: str | int | float | None = None
    error: str = ""
    question: Question | None = None


def parse_command(data: str, max_chars: int) -> Command:
    """Read a ``command`` message: plain text, or ``{"id": ..., "command": "..."}``.

    A message whose first non-blank character is ``{`` is read as JSON. Never raises: a bad
    message comes back with ``error`` set, the id it carried when that id could be read, and
    the command text (or the raw message) for the echo, which results bound.
    """
    if len(data) > _JSON_OVERHEAD * max_chars + MAX_ID_CHARS:
        return Command(data, None, f"command has {len(data)} characters; the limit is {max_chars}")
    text: Any = data
    ident: str | int | float | None = None
    if data.lstrip().startswith("{"):
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            where = (
                f" ({exc.msg} at character {exc.pos})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            return Command(
                data, None, f"command looks like JSON but does not parse{where}; {_FORMS}"
            )
        if not isinstance(obj, dict):
            return Command(data, None, f"a JSON command must be an object; {_FORMS}")
        ident, id_error = _read_id(obj.get("id"))
        if id_error:
            return Command(_text_or(obj, data), None, id_error)
        unknown = sorted(str(k) for k in obj if k not in _COMMAND_KEYS)
        if unknown:
            return Command(_text_or(obj, data), ident, f"unknown key(s) {unknown}; {_FORMS}")
        if "command" not in obj:
            return Command(data, ident, f'a JSON command needs a "command" key; {_FORMS}')
        text = obj["command"]
        if not isinstance(text, str):
            return Command(data, ident, f'"command" must be a string, got {type(text).__name__}')
    try:
        return Command(text, ident, question=check_question(text, max_chars))
    except ValueError as exc:
        return Command(text, ident, str(exc))


_FORMS = 'send plain text or {"id": "<string or number>", "command": "<text>"}'


def _text_or(obj: dict[str, Any], raw: str) -> str:
    text = obj.get("command")
    return text if isinstance(text, str) else raw


def _read_id(value: Any) -> tuple[str | int | float | None, str]:
    """The caller's id and "" , or None and why it cannot be echoed."""
    if value is None:
        return None, ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, f'"id" must be a string or a number, got {type(value).__name__}'
    if isinstance(value, float) and not math.isfinite(value):
        return None, f'"id" must be a finite number, got {value}'
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        return None, f'"id" has {len(value)} characters; the limit is {MAX_ID_CHARS}'
    if isinstance(value, int) and abs(value) >= 2**63:
        return None, '"id" must fit in 64 bits'
    return value, ""


def success_messages(
    result: Result, header: Header, *, overlay_on: np.ndarray | None = None
) -> dict[str, Any]:
    """What a success publishes besides its result, by topic: ``mask``, ``rationale``,
    ``overlay`` (drawn on ``overlay_on``, the source image, when given) and ``detections``
    (where vision_msgs is installed). Nothing for a failure."""
    if not result.ok:
        return {}
    messages: dict[str, Any] = {}
    if result.mask is not None:
        messages["mask"] = mask_to_image(result.mask, header)
    messages["rationale"] = String(data=result.rationale)
    if overlay_on is not None:
        messages["overlay"] = numpy_to_image(overlay(overlay_on, result), "rgb8", header)
    if HAVE_VISION_MSGS:
        messages["detections"] = result_to_detections(result, header)
    return messages


def result_to_string(
    result: Result, header: Header, node_info: dict[str, Any], command_id: Any = None
) -> String:
    """The ``result`` topic: ``Result.to_json`` plus the caller's ``id`` (null without one),
    the source ``stamp``/``frame_id`` and the node-side fields (``node``: request id, queue
    wait, image age, node overhead)."""
    return String(
        data=result.to_json(
            id=command_id,
            stamp=stamp_to_dict(header.stamp),
            frame_id=header.frame_id,
            node=node_info,
        )
    )


def result_to_detections(result: Result, header: Header) -> Any:
    """vision_msgs/Detection2DArray (one detection per object), or None without vision_msgs."""
    if not HAVE_VISION_MSGS:
        return None
    array = Detection2DArray()
    array.header = header
    for index, obj in enumerate(result.objects):
        x1, y1, x2, y2 = (float(v) for v in obj.box)
        det = Detection2D()
        det.header = header
        det.id = str(index)
        center = det.bbox.center
        # vision_msgs >= 4 has center.position.{x,y}; older releases center.{x,y}.
        target = center.position if hasattr(center, "position") else center
        target.x, target.y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        det.bbox.size_x, det.bbox.size_y = x2 - x1, y2 - y1
        hypothesis = ObjectHypothesisWithPose()
        hyp = hypothesis.hypothesis if hasattr(hypothesis, "hypothesis") else hypothesis
        if hasattr(hyp, "class_id"):
            hyp.class_id = result.command
        hyp.score = float(obj.score)
        det.results.append(hypothesis)
        array.detections.append(det)
    return array


def diagnostics_message(
    stamp: Time, name: str, hardware_id: str, level: bytes, message: str, values: dict[str, Any]
) -> DiagnosticArray:
    """DiagnosticArray with one status (``level``: DiagnosticStatus.OK, WARN, ERROR or STALE)."""
    status = DiagnosticStatus()
    status.level = level
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [
        KeyValue(key=k, value=v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()
    ]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array
