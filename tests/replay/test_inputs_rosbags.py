"""The node's image and command readers (wise_perception.inputs) on rosbags' messages, as a
replay feeds them: the same conversions the node's tests check on rclpy's messages
(tests/perception/test_node_messages.py), plus CompressedImage."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs the replay extra (rosbags)")

from support.bags import BagBuilder, rgb

from wise_perception.inputs import images
from wise_perception.inputs.commands import parse_command
from wise_perception.inputs.frame_slot import FrameSlot

PIXELS = rgb(3)


def image_msg(encoding: str, pixels: np.ndarray, pad: int = 0):
    builder = BagBuilder()
    builder.image(0, "cam", pixels, encoding=encoding, pad=pad)
    return builder.messages[0][3]


def compressed_msg(fmt: str, pixels: np.ndarray = PIXELS, data: bytes | None = None):
    builder = BagBuilder()
    builder.compressed(0, "cam", pixels, fmt)
    msg = builder.messages[0][3]
    if data is not None:
        msg.data = np.frombuffer(data, np.uint8)
    return msg


@pytest.mark.parametrize("pad", [0, 5])
def test_every_encoding_with_row_padding(pad):
    bgr = np.ascontiguousarray(PIXELS[:, :, ::-1])
    alpha = np.full((*PIXELS.shape[:2], 1), 9, np.uint8)
    cases = {
        "rgb8": PIXELS,
        "bgr8": bgr,
        "rgba8": np.concatenate([PIXELS, alpha], 2),
        "bgra8": np.concatenate([bgr, alpha], 2),
    }
    for encoding, pixels in cases.items():
        msg = image_msg(encoding, pixels, pad)
        np.testing.assert_array_equal(images.image_to_rgb(msg), PIXELS, err_msg=encoding)
    mono = PIXELS[:, :, 0]
    out = images.image_to_rgb(image_msg("mono8", mono[:, :, None], pad))
    np.testing.assert_array_equal(out, np.repeat(mono[:, :, None], 3, axis=2))


def test_unknown_encodings_and_bad_buffers_say_why():
    with pytest.raises(images.ImageError, match="unsupported image encoding 'yuv422'"):
        images.check_frame(image_msg("yuv422", PIXELS))
    short = image_msg("rgb8", PIXELS)
    short.data = short.data[:-1]
    with pytest.raises(images.ImageError, match="but step\\*height"):
        images.check_frame(short)


def test_compressed_png_is_exact_and_jpeg_close():
    png = compressed_msg("png")
    images.check_frame(png)
    np.testing.assert_array_equal(images.checked_frame_to_rgb(png), PIXELS)
    smooth = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 48, 0).repeat(3, 2)
    jpeg = compressed_msg("rgb8; jpeg compressed bgr8", smooth)  # image_transport's format
    decoded = images.checked_frame_to_rgb(jpeg)
    assert decoded.shape == smooth.shape and np.abs(decoded.astype(int) - smooth).mean() < 4


def test_compressed_problems_are_found_on_receipt_or_on_decoding():
    with pytest.raises(images.ImageError, match="unsupported compressed format 'h264'"):
        images.check_frame(compressed_msg("h264"))
    with pytest.raises(images.ImageError, match="a depth image"):
        images.check_frame(compressed_msg("16UC1; compressedDepth png"))
    with pytest.raises(images.ImageError, match="not a readable PNG"):
        images.check_frame(compressed_msg("png", data=b"not a png at all"))
    with pytest.raises(images.ImageError, match="exceeds max_image_pixels=100"):
        images.check_frame(compressed_msg("png"), max_pixels=100)  # from the header alone
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(PIXELS).save(buffer, format="PNG")
    cut = compressed_msg("png", data=buffer.getvalue()[:200])  # header whole, pixels cut
    images.check_frame(cut)
    with pytest.raises(images.ImageError, match="does not decode"):
        images.checked_frame_to_rgb(cut)


def test_the_frame_slot_takes_rosbags_messages_of_either_kind():
    slot = FrameSlot(lambda: 0, monotonic=lambda: 0.0)
    compressed = slot.put(compressed_msg("png"), 0)
    assert compressed.error == "" and compressed.key.startswith("cam@")
    np.testing.assert_array_equal(compressed.image().pixels, PIXELS)
    bad = slot.put(compressed_msg("png", data=b"\x89PNG junk"), 0)
    assert "not a readable PNG" in bad.error and slot.newest() is bad


def test_commands_parse_the_same_from_a_bag():
    msg = BagBuilder().store.types["std_msgs/msg/String"](
        data='{"id": "pick-7", "command": "the cup"}'
    )
    command = parse_command(msg.data, 1000)
    assert command.id == "pick-7" and command.question is not None and command.text == "the cup"
