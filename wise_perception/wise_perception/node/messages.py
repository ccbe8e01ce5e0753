"""ROS message conversions for the node: sensor_msgs/Image <-> numpy, command messages ->
checked commands, Result -> every message it publishes.

Reading images and commands is ROS-free and shared with the bag replay
(:mod:`wise_perception.inputs`: the same conversions on rosbags' messages); it is re-exported
here, so the node reads its inputs through this one module. Images: rgb8, bgr8, rgba8, bgra8
and mono8 with row padding, no cv_bridge; anything else is an :class:`ImageError` naming the
problem, which the node turns into an ``invalid_image`` result. Commands: plain text or
``{"id": ..., "command": ...}`` (:func:`parse_command`).

``vision_msgs`` is optional: :data:`HAVE_VISION_MSGS` says whether Detection2DArray can be
built (a ROS 2 install usually has it; the PyPI wheels used in tests do not).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from ..command_track import track_message

# Reading the node's inputs is ROS-free (wise_perception.inputs, shared with the bag replay);
# the node reaches it through this module (``X as X``: re-exported).
from ..inputs.commands import Command as Command
from ..inputs.commands import parse_command as parse_command
from ..inputs.images import ImageError as ImageError
from ..inputs.images import check_image as check_image
from ..inputs.images import image_fields
from ..inputs.images import image_to_rgb as image_to_rgb
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


def numpy_to_image(array: np.ndarray, encoding: str, header: Header) -> Image:
    """An Image (no padding) from HxW (mono8) or HxWx3 (rgb8/bgr8) or HxWx4 uint8 arrays."""
    msg = Image(**image_fields(array, encoding))
    msg.header = header
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
    result: Result,
    header: Header,
    node_info: dict[str, Any],
    command_id: Any = None,
    **extra: Any,
) -> String:
    """The ``result`` topic: ``Result.to_json`` plus the caller's ``id`` (null without one),
    the source ``stamp``/``frame_id``, the node-side fields (``node``: request id, queue
    wait, image age, node overhead) and ``extra`` (``track``: whether the answer is tracked)."""
    return String(
        data=result.to_json(
            id=command_id,
            stamp=stamp_to_dict(header.stamp),
            frame_id=header.frame_id,
            node=node_info,
            **extra,
        )
    )


def track_to_string(fields: dict[str, Any], header: Header) -> String:
    """The ``track`` topic: one tracked frame (or the track's end), with the ``stamp`` and
    ``frame_id`` of the frame it was computed on (:func:`wise_perception.command_track.track_message`)."""
    return String(data=json.dumps(track_message(fields, header)))


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
