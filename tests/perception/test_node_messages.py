"""Image <-> numpy and Result -> message conversions, without DDS."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 message packages (ros-wheels extra)")

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image

from wise_perception import visualize
from wise_perception.core.prompts import Question
from wise_perception.node import messages as rm
from wise_perception.result import ObjectResult, Result, Status, Timings

pytestmark = pytest.mark.ros

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
HEADER = rm.header_of(Time(sec=12, nanosec=345), "cam_optical")


def raw(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An Image with ``pad`` junk bytes at the end of every row."""
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1] + pad)
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 3])
def test_rgb8_and_padding(pad):
    out = rm.image_to_rgb(raw(RGB, "rgb8", pad))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("pad", [0, 5])
def test_bgr8_is_swapped_to_rgb(pad):
    np.testing.assert_array_equal(rm.image_to_rgb(raw(RGB[:, :, ::-1].copy(), "bgr8", pad)), RGB)


def test_rgba8_and_bgra8_drop_alpha():
    alpha = np.full((5, 7, 1), 9, np.uint8)
    np.testing.assert_array_equal(
        rm.image_to_rgb(raw(np.concatenate([RGB, alpha], 2), "rgba8")), RGB
    )
    bgra = np.concatenate([RGB[:, :, ::-1], alpha], 2)
    np.testing.assert_array_equal(rm.image_to_rgb(raw(bgra, "bgra8", 2)), RGB)


def test_mono8_expands_to_three_channels():
    gray = RGB[:, :, 0].copy()
    out = rm.image_to_rgb(raw(gray, "mono8", 1))
    assert out.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_is_bigendian_is_irrelevant_for_8_bit():
    msg = raw(RGB, "rgb8")
    msg.is_bigendian = 1
    np.testing.assert_array_equal(rm.image_to_rgb(msg), RGB)


def test_output_does_not_alias_the_message():
    msg = raw(RGB, "rgb8")
    out = rm.image_to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(rm.image_to_rgb(msg), RGB)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda m: setattr(m, "encoding", "16UC1"), "unsupported image encoding '16UC1'"),
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding 'yuv422'"),
        (
            lambda m: (setattr(m, "width", 0), setattr(m, "step", 0), setattr(m, "data", b"")),
            "image has zero size (0x5)",
        ),
        (lambda m: setattr(m, "height", 0), "image has zero size (7x0)"),
        (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "data has 104 bytes but step*height"),
        (lambda m: setattr(m, "step", 20), "step 20 is shorter than a row"),
    ],
)
def test_bad_images_raise_with_a_reason(mutate, needle):
    msg = raw(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(rm.ImageError) as info:
        rm.image_to_rgb(msg)
    assert needle in str(info.value)


def test_too_many_pixels():
    with pytest.raises(rm.ImageError, match="exceeds max_image_pixels=30"):
        rm.check_image(raw(RGB, "rgb8"), max_pixels=30)
    rm.check_image(raw(RGB, "rgb8"), max_pixels=35)  # exactly at the limit is fine


def test_no_pixel_limit_means_none_not_the_pipelines_default():
    """max_image_pixels 0: a 4100x4100 image (over the pipeline's default 4096^2) passes."""
    big = Image(height=4100, width=4100, encoding="mono8", step=4100)
    big.data = bytes(4100 * 4100)
    rm.check_image(big, max_pixels=0)
    with pytest.raises(rm.ImageError, match="exceeds max_image_pixels=16777216"):
        rm.check_image(big, max_pixels=4096 * 4096)


@pytest.mark.parametrize(
    ("data", "text", "ident"),
    [
        ("the red cup", "the red cup", None),
        ("  {not json but plain", None, None),
        ('{"id": "pick-7", "command": "the red cup"}', "the red cup", "pick-7"),
        ('{"id": 12, "command": "the red cup"}', "the red cup", 12),
        ('{"command": "the red cup"}', "the red cup", None),
    ],
)
def test_commands_plain_or_json_with_an_id(data, text, ident):
    command = rm.parse_command(data, 1000)
    if text is None:  # starts with "{": read as JSON, and it is not
        assert "does not parse" in command.error and command.id is None
        assert command.question is None
        return
    assert (command.text, command.id, command.error) == (text, ident, "")
    # checked once, here: the pipeline quotes it as it is, within the same limit
    assert command.question == Question(text, text, 1000)


@pytest.mark.parametrize(
    ("data", "ident", "needle"),
    [
        ('{"id": 3, "command": 5}', 3, '"command" must be a string'),
        ('{"id": 3}', 3, 'needs a "command" key'),
        ('{"id": 3, "command": "x", "extra": 1}', 3, "unknown key(s) ['extra']"),
        ('{"id": [1], "command": "x"}', None, '"id" must be a string or a number'),
        ('{"id": true, "command": "x"}', None, '"id" must be a string or a number'),
        ('{"id": NaN, "command": "x"}', None, "finite"),
        ('{"id": "' + "i" * 129 + '", "command": "x"}', None, "the limit is 128"),
        ('{"id": 1, "command": "x"} and more', None, "does not parse (Extra data"),
        ('{"id": 4, "command": "   "}', 4, "command is empty"),
        ('{"id": 4, "command": "' + "x" * 1001 + '"}', 4, "1001 characters; the limit is 1000"),
        ("{" + "[" * 5000, None, "does not parse"),
    ],
)
def test_bad_commands_say_why_and_keep_the_id_they_could_read(data, ident, needle):
    command = rm.parse_command(data, 1000)
    assert needle in command.error and command.id == ident
    assert command.question is None


@pytest.mark.parametrize(
    ("data", "track", "stop", "error"),
    [
        ('{"command": "the cup", "track": true}', True, False, ""),
        ('{"id": 2, "command": "the cup", "track": false}', False, False, ""),
        ("the cup", None, False, ""),  # plain text: the node's track_default
        ('{"stop": true}', None, True, ""),
        ('{"id": "s1", "stop": true}', None, True, ""),
        ('{"command": "the cup", "track": "yes"}', "yes", False, '"track" must be true or false'),
        ('{"stop": 1}', None, False, '"stop" must be true or false'),
        ('{"stop": true, "command": "the cup"}', None, False, 'a stop takes no "command"'),
        ('{"stop": false}', None, False, 'needs a "command" key'),
    ],
)
def test_commands_ask_for_tracking_or_stop_it(data, track, stop, error):
    command = rm.parse_command(data, 1000)
    assert command.stop is stop
    if error:
        assert error in command.error and command.question is None
        return
    assert command.error == "" and command.track is track
    assert (command.question is None) is stop


def test_a_huge_command_is_refused_unread():
    command = rm.parse_command("x" * 1_000_000, 1000)
    assert command.error == "command has 1000000 characters; the limit is 1000"
    # the echo is bounded by the result, whatever the message held
    payload = json.loads(
        rm.result_to_string(
            Result.failure(command.text, Status.INVALID_COMMAND, command.error), HEADER, {}
        ).data
    )
    assert len(payload["command"]) < 300 and payload["id"] is None


def test_numpy_to_image_round_trip_and_header():
    msg = rm.numpy_to_image(RGB, "rgb8", HEADER)
    assert (msg.width, msg.height, msg.step, msg.encoding) == (7, 5, 21, "rgb8")
    assert msg.header.frame_id == "cam_optical" and msg.header.stamp.nanosec == 345
    np.testing.assert_array_equal(rm.image_to_rgb(msg), RGB)
    with pytest.raises(rm.ImageError):
        rm.numpy_to_image(RGB.astype(np.float32), "rgb8", HEADER)
    with pytest.raises(rm.ImageError):
        rm.numpy_to_image(RGB, "mono8", HEADER)


def test_mask_is_mono8_0_255_with_source_header():
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:5] = True
    msg = rm.mask_to_image(mask, HEADER)
    assert msg.encoding == "mono8" and (msg.width, msg.height, msg.step) == (7, 5, 7)
    assert msg.header.stamp.sec == 12 and msg.header.frame_id == "cam_optical"
    values = np.frombuffer(bytes(msg.data), np.uint8).reshape(5, 7)
    assert set(np.unique(values)) == {0, 255}
    np.testing.assert_array_equal(values == 255, mask)


def ok_result() -> Result:
    mask = np.zeros((5, 7), bool)
    mask[1:4, 1:4] = True
    return Result(
        command="the cup",
        status=Status.OK,
        rationale="The cup is left of the laptop.",
        reasoning_tokens=9,
        objects=[ObjectResult(box=(1.0, 1.0, 3.0, 3.0), points=((2.0, 2.0),), score=0.9)],
        mask=mask,
        image_size=(7, 5),
        timings=Timings(total=0.5),
        mode="wise_s",
    )


def test_result_json_has_the_source_header_and_node_fields():
    payload = json.loads(rm.result_to_string(ok_result(), HEADER, {"queue_wait_ms": 1.0}).data)
    assert payload["stamp"] == {"sec": 12, "nanosec": 345} and payload["frame_id"] == "cam_optical"
    assert payload["node"] == {"queue_wait_ms": 1.0} and payload["id"] is None
    with_id = rm.result_to_string(ok_result(), HEADER, {}, "pick-7")
    assert json.loads(with_id.data)["id"] == "pick-7"
    assert payload["status"] == "ok" and payload["reasoning_tokens"] == 9
    assert payload["objects"][0]["box"] == [1.0, 1.0, 3.0, 3.0]
    assert payload["timings"]["total_ms"] == 500.0 and payload["mask_pixels"] == 9


def test_a_success_publishes_mask_rationale_overlay_and_detections_with_its_header():
    messages = rm.success_messages(ok_result(), HEADER, overlay_on=RGB)
    expected = ["mask", "rationale", "overlay"] + (["detections"] if rm.HAVE_VISION_MSGS else [])
    assert list(messages) == expected
    assert messages["rationale"].data == "The cup is left of the laptop."
    for topic in ("mask", "overlay"):
        assert messages[topic].header.frame_id == "cam_optical"
    # the overlay is the one picture of a result (visualize.overlay), as the CLI draws it
    drawn = rm.image_to_rgb(messages["overlay"])
    np.testing.assert_array_equal(drawn, visualize.overlay(RGB, ok_result()))
    assert "overlay" not in rm.success_messages(ok_result(), HEADER)  # not asked for
    failure = Result.failure("the cup", Status.NO_IMAGE, "no image")
    assert rm.success_messages(failure, HEADER, overlay_on=RGB) == {}


def test_detections_only_with_vision_msgs():
    dets = rm.result_to_detections(ok_result(), HEADER)
    if not rm.HAVE_VISION_MSGS:
        assert dets is None
        return
    assert len(dets.detections) == 1 and dets.header.frame_id == "cam_optical"
    assert dets.detections[0].bbox.size_x == 2.0


def test_diagnostics_message():
    arr = rm.diagnostics_message(
        Time(sec=3),
        "wise",
        "/wise/wise_perception",
        DiagnosticStatus.WARN,
        "inactive",
        {"state": "inactive", "ok": 2, "counts": {"ok": 2}},
    )
    status = arr.status[0]
    assert status.level == DiagnosticStatus.WARN and status.message == "inactive"
    values = {kv.key: kv.value for kv in status.values}
    assert values == {"state": "inactive", "ok": "2", "counts": '{"ok": 2}'}
