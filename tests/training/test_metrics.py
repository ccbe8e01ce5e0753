"""gIoU / cIoU exactly as LISA and Seg-Zero compute them, including empty masks."""

import numpy as np
import pytest

from wise_training.metrics import SegmentationScores, score_masks, token_stats


def square(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_per_sample_iou_giou_and_ciou_by_hand():
    shape = (10, 10)
    gt1, pred1 = square(shape, 0, 4, 0, 4), square(shape, 0, 4, 0, 2)  # I=8,  U=16 -> 0.5
    gt2, pred2 = square(shape, 0, 10, 0, 10), square(shape, 0, 10, 0, 10)  # I=100, U=100 -> 1
    scores = SegmentationScores()
    scores.add(score_masks(pred1, gt1))
    scores.add(score_masks(pred2, gt2))
    assert [(s.intersection, s.union) for s in scores.samples] == [(8, 16), (100, 100)]
    assert scores.giou == pytest.approx((0.5 + 1.0) / 2)
    assert scores.ciou == pytest.approx(108 / 116)
    assert scores.as_dict()["n"] == 2


def test_unparsable_answer_counts_as_an_empty_prediction():
    gt = square((8, 8), 0, 4, 0, 4)
    s = score_masks(None, gt)
    assert (s.intersection, s.union, s.iou) == (0, 16, 0.0)  # released evaluation.py


def test_empty_target_conventions():
    empty = np.zeros((5, 5), bool)
    # LISA: empty target and empty prediction -> IoU 1 (acc_iou[union == 0] += 1)
    assert score_masks(empty, empty, convention="lisa").iou == 1.0
    # Seg-Zero's calculate_iou.py: union 0 -> 0
    assert score_masks(empty, empty, convention="seg_zero").iou == 0.0
    # a prediction on an empty target is wrong in both
    pred = square((5, 5), 0, 1, 0, 1)
    assert score_masks(pred, empty).iou == 0.0
    scores = SegmentationScores()
    scores.add(score_masks(empty, empty))
    assert scores.ciou == 0.0 and scores.giou == 1.0


def test_ignore_regions():
    gt = square((10, 10), 0, 5, 0, 5)  # 25 px target
    ignore = square((10, 10), 0, 5, 5, 10)  # 25 px "ignore" polygon
    pred = square((10, 10), 0, 5, 0, 10)  # covers target and ignore region
    lisa = score_masks(pred, gt, ignore=ignore, convention="lisa")
    assert (lisa.intersection, lisa.union) == (25, 25)  # ignore pixels excluded from both
    segzero = score_masks(pred, gt, ignore=ignore, convention="seg_zero")
    assert (segzero.intersection, segzero.union) == (50, 50)  # ignore counted as target
    miss = score_masks(square((10, 10), 0, 5, 0, 5), gt, ignore=ignore, convention="seg_zero")
    assert (miss.intersection, miss.union) == (25, 50)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        score_masks(np.zeros((2, 2)), np.zeros((3, 3)))


def test_token_stats():
    stats = token_stats([10, 20, 30, 40], bins=4)
    assert (
        stats["mean"] == 25 and stats["median"] == 25 and stats["min"] == 10 and stats["max"] == 40
    )
    assert stats["p90"] == pytest.approx(37.0)
    assert sum(stats["histogram"]["counts"]) == 4
    assert token_stats([])["n"] == 0
