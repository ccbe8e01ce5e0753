"""Input bounds: one rule for every boundary, and what a checked image's check covers."""

import numpy as np

from wise_perception.core.limits import CheckedImage, image_size_problem


def test_a_checked_image_covers_limits_no_tighter_than_its_own():
    image = CheckedImage(np.zeros((2, 3, 3), np.uint8), max_pixels=100)
    assert image.shape == (2, 3, 3)
    assert image.within(100) and image.within(1000) and image.within(0)  # 0: no limit
    assert not image.within(50)
    unchecked_size = CheckedImage(image.pixels, max_pixels=0)  # checked with no limit
    assert unchecked_size.within(0) and not unchecked_size.within(100)


def test_size_problems_are_named():
    assert image_size_problem(0, 4) == "image has zero size (0x4)"
    assert "exceeds max_image_pixels=10" in image_size_problem(4, 4, 10)
    assert image_size_problem(4100, 4100, 0) == ""
