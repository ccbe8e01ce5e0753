"""Image messages -> RGB pixels, for any object with the fields of sensor_msgs/Image or
sensor_msgs/CompressedImage (rclpy's messages in the node, rosbags' in the replay).

No cv_bridge (not available from any registry the tests use): 8-bit encodings are converted
with numpy, honouring row padding (``step`` > ``width * channels``). ``is_bigendian`` is
irrelevant for 8-bit data. A CompressedImage holds a JPEG or PNG file (``format`` "jpeg",
"png", or image_transport's "rgb8; jpeg compressed bgr8"): its header is read on receipt (size,
pixel limit) and the pixels are decoded when used. Anything else is rejected with an
:class:`ImageError` whose message names the problem; the node turns it into an
``invalid_image`` result.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..core.limits import image_size_problem

# encoding -> (channels, index of R, G, B in a pixel); mono is expanded to three channels.
ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
# CompressedImage: the codecs read, and the 8-bit PIL modes they may decode to (a 16-bit PNG
# is a depth image, not a camera frame).
COMPRESSED_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
_COLOR_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"})


class ImageError(ValueError):
    """An image the node cannot use; the message says why (reported as ``invalid_image``)."""


def check_image(msg: Any, max_pixels: int = 0) -> None:
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


def image_to_rgb(msg: Any, max_pixels: int = 0) -> np.ndarray:
    """HxWx3 uint8 RGB (C-contiguous, owning its memory) from an 8-bit sensor_msgs/Image,
    checked first (:func:`check_image`)."""
    check_image(msg, max_pixels)
    return checked_to_rgb(msg)


def checked_to_rgb(msg: Any) -> np.ndarray:
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


def image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """The fields of an Image without padding (``height``, ``width``, ``encoding``,
    ``is_bigendian``, ``step``, ``data`` as bytes) holding ``array``: HxW (mono8), HxWx3
    (rgb8/bgr8) or HxWx4 uint8."""
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
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(width * channels),
        "data": np.ascontiguousarray(array).tobytes(),
    }


# --------------------------------------------------------------------------- CompressedImage
def is_compressed(msg: Any) -> bool:
    """Whether ``msg`` is a CompressedImage (it has ``format`` where an Image has ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def check_compressed(msg: Any, max_pixels: int = 0) -> None:
    """Validate a CompressedImage from its format and the file's header, without decoding
    its pixels: a JPEG or PNG of 8-bit colour or grey within ``max_pixels`` (0 = no limit)."""
    _open_compressed(msg, max_pixels)


def compressed_to_rgb(msg: Any, max_pixels: int = 0) -> np.ndarray:
    """HxWx3 uint8 RGB decoded from a CompressedImage (checked first, as on receipt)."""
    picture = _open_compressed(msg, max_pixels)
    try:
        return np.array(picture.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for damaged data
        raise ImageError(f"{picture.format} data does not decode: {exc}") from None


def _open_compressed(msg: Any, max_pixels: int) -> Any:
    from PIL import Image as PILImage

    declared = str(msg.format).strip().lower()
    if "compresseddepth" in declared.replace(" ", ""):
        raise ImageError(f"unsupported compressed format {msg.format!r}: a depth image")
    codec = next(
        (name for token, name in COMPRESSED_FORMATS.items() if token in _tokens(declared)), None
    )
    if codec is None:
        raise ImageError(
            f"unsupported compressed format {msg.format!r}; supported: jpeg, png "
            "(also image_transport's '<encoding>; jpeg compressed <encoding>')"
        )
    data = bytes(msg.data)
    if not data:
        raise ImageError(f"compressed {codec} image has no data")
    try:
        picture = PILImage.open(io.BytesIO(data), formats=[codec])
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"data is not a readable {codec} file: {exc}") from None
    if picture.mode not in _COLOR_MODES:
        raise ImageError(f"{codec} of mode {picture.mode!r} is not an 8-bit colour or grey image")
    problem = image_size_problem(picture.width, picture.height, max_pixels)
    if problem:
        raise ImageError(problem)
    return picture


def _tokens(text: str) -> set[str]:
    return set(text.replace(";", " ").split())


# --------------------------------------------------------------------------- either kind
def check_frame(msg: Any, max_pixels: int = 0) -> None:
    """:func:`check_image` or :func:`check_compressed`, whichever ``msg`` is."""
    if is_compressed(msg):
        check_compressed(msg, max_pixels)
    else:
        check_image(msg, max_pixels)


def checked_frame_to_rgb(msg: Any) -> np.ndarray:
    """The RGB pixels of a frame that has passed :func:`check_frame`: converted (Image) or
    decoded (CompressedImage: may raise :class:`ImageError` for data that does not decode)."""
    return compressed_to_rgb(msg) if is_compressed(msg) else checked_to_rgb(msg)
