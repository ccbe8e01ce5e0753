"""Resize protocol and box/point geometry (released evaluation.py and seg_restrict.py)."""

import cv2
import numpy as np
import pytest

from wise_perception.core.answer import ObjectPrompt
from wise_perception.core.geometry import (
    ResizeProtocol,
    box_iou,
    box_l1,
    mean_point_distance,
    point_in_box,
)


def test_answers_map_back_with_round_x_w_over_840():
    proto = ResizeProtocol()
    # 1280x720: x * 1280/840, y * 720/840, rounded (released evaluation.py)
    assert proto.box_to_image([10, 100, 200, 210], 1280, 720) == (
        round(10 * 1280 / 840),
        round(100 * 720 / 840),
        round(200 * 1280 / 840),
        round(210 * 720 / 840),
    )
    assert proto.point_to_image([30, 110], 640, 480) == (
        round(30 * 640 / 840),
        round(110 * 480 / 840),
    )


def test_mapping_clips_to_the_image():
    proto = ResizeProtocol()
    assert proto.box_to_image([-20, -5, 900, 841], 640, 480) == (0, 0, 639, 479)
    obj = proto.object_to_image(ObjectPrompt((0, 0, 840, 840), ((840, 0),)), 100, 50)
    assert obj.box == (0, 0, 99, 49) and obj.points == ((99, 0),)


def test_policy_frame_round_trip():
    proto = ResizeProtocol()
    box = proto.box_to_policy([64, 48, 320, 240], 640, 480)
    assert box == pytest.approx((84, 84, 420, 420))
    assert proto.box_to_image(box, 640, 480) == (64, 48, 320, 240)
    assert proto.point_to_policy([320, 240], 640, 480) == pytest.approx((420, 420))


def test_resize_is_pils_bilinear_as_the_release():
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1280, 1920, 3), dtype=np.uint8)  # textured, shrunk 2.3x
    ours = ResizeProtocol().resize(image)
    pil = np.asarray(Image.fromarray(image).resize((840, 840), Image.BILINEAR))
    assert np.array_equal(ours, pil)
    # OpenCV's INTER_LINEAR does not antialias when shrinking: a different picture.
    cv = cv2.resize(image, (840, 840), interpolation=cv2.INTER_LINEAR)
    assert np.abs(cv.astype(int) - pil.astype(int)).mean() > 5


def test_resize_to_the_policy_frame():
    image = np.zeros((480, 640, 3), np.uint8)
    assert ResizeProtocol().resize(image).shape == (840, 840, 3)
    assert ResizeProtocol(size=112).resize(image).shape == (112, 112, 3)
    with pytest.raises(ValueError, match="HxWx3"):
        ResizeProtocol().resize(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="multiple of 28"):
        ResizeProtocol(size=100)
    with pytest.raises(ValueError, match="positive"):
        ResizeProtocol().box_to_image([0, 0, 1, 1], 0, 10)


def test_box_iou_is_pixel_inclusive():
    assert box_iou([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
    # 10x10 vs 5x10 inside it: 50 / 100
    assert box_iou([0, 0, 9, 9], [0, 0, 4, 9]) == pytest.approx(0.5)
    # overlap [5..9] x [0..9] = 50 px; union 100 + 100 - 50
    assert box_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 9, 9], [20, 20, 30, 30]) == 0.0
    # touching edges count as disjoint in the released implementation
    assert box_iou([0, 0, 9, 9], [9, 0, 19, 9]) == 0.0


def test_box_l1_and_points():
    assert box_l1([0, 0, 10, 10], [4, 0, 10, 6]) == pytest.approx(2.0)
    assert point_in_box([5, 5], [0, 0, 5, 5]) and not point_in_box([6, 5], [0, 0, 5, 5])
    # order-invariant: swapped ground truth gives the same distance
    assert mean_point_distance([[0, 0], [10, 0]], [[10, 0], [0, 3]]) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        mean_point_distance([[0, 0]], [[0, 0], [1, 1]])


def test_a_frame_sized_read_only_image_comes_back_writable_and_unchanged():
    # PIL's np.asarray is read-only; the processors wrap the frame in a tensor (torch warns)
    image = np.arange(112 * 112 * 3, dtype=np.uint8).reshape(112, 112, 3)
    image.flags.writeable = False
    out = ResizeProtocol(size=112).resize(image)
    assert out.flags.writeable and np.array_equal(out, image)
    writable = np.zeros((112, 112, 3), np.uint8)
    assert ResizeProtocol(size=112).resize(writable) is writable  # no copy when none is needed
