"""The one picture of a result (node overlay topic and CLI overlay PNG) and the 0/255 mask."""

from __future__ import annotations

import numpy as np

from wise_perception.result import ObjectResult, Result, Status
from wise_perception.visualize import mask_to_uint8, overlay

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _result(box, points) -> Result:
    mask = np.zeros((5, 7), bool)
    mask[1:4, 1:4] = True
    objects = [ObjectResult(box=box, points=points, score=1.0)]
    return Result("the cup", Status.OK, rationale="left.", objects=objects, mask=mask)


def test_overlay_draws_mask_and_box_within_bounds():
    # a box beyond the image and a point that is not a number are clipped, not raised on
    result = _result((-5.0, 1.0, 99.0, 3.0), ((float("nan"), 2.0),))
    before = RGB.copy()
    out = overlay(RGB, result)
    assert out.shape == RGB.shape and out.dtype == np.uint8
    assert not np.array_equal(out, RGB)
    np.testing.assert_array_equal(RGB, before)  # the input is not drawn on


def test_overlay_of_a_failure_draws_its_status_only():
    failure = Result.failure("the cup", Status.NO_IMAGE, "no image")
    big = np.full((120, 160, 3), 200, np.uint8)
    out = overlay(big, failure)
    assert out.shape == big.shape
    assert (out[-40:] == big[-40:]).all()  # nothing below the caption band


def test_mask_is_0_or_255_at_the_asked_size():
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:5] = True
    out = mask_to_uint8(mask, (5, 7))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 255}
    np.testing.assert_array_equal(out == 255, mask)
    # no mask, or one of another size (a failure): all zero at the asked size
    assert not mask_to_uint8(None, (4, 6)).any() and mask_to_uint8(None, (4, 6)).shape == (4, 6)
    assert not mask_to_uint8(mask, (4, 6)).any()
