"""Reason once, then track, through the pipeline: ``pipeline.track`` and the track's ends.

The taught tiny policy answers a fixed box on any frame; the tiny SAM2 with video memory
(random weights) follows it. What is checked is the contract of a track: its seed frame, one
update per newer frame, and when and how it ends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wise_dev.moving_shapes import make_stream
from wise_perception.pipeline import WisePipeline
from wise_perception.result import Result, Status
from wise_perception.segmenter import TrackingUnsupported
from wise_perception.tracking import TrackSettings, TrackState


@pytest.fixture(scope="module")
def pipeline(taught_policy_dir: Path, tiny_sam2_video_dir: Path):
    loaded = WisePipeline.from_pretrained(
        taught_policy_dir, tiny_sam2_video_dir, device="cpu", dtype="float32", max_new_tokens=96
    )
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return make_stream(11, length=10, height=120, width=160).frames


@pytest.fixture(scope="module")
def answer(pipeline, frames) -> Result:
    result = pipeline.segment(frames[0], "the red square")
    assert result.ok and result.objects
    return result


def test_a_track_starts_on_the_answer_and_follows_each_frame(pipeline, frames, answer) -> None:
    track, seed = pipeline.track(frames[0], answer, TrackSettings(score_threshold=0.0))
    assert seed.state is TrackState.TRACKING and seed.step.index == 0
    assert seed.step.mask.shape == (120, 160) and len(seed.step.objects) == len(answer.objects)
    updates = [track.update(frame) for frame in frames[1:]]
    assert [u.step.index for u in updates] == list(range(1, len(frames)))
    assert all(u.state is TrackState.TRACKING for u in updates)
    assert track.frames == len(frames) - 1
    line = updates[-1].to_dict()
    assert set(line) >= {"state", "frame_index", "score", "box", "objects", "mask_pixels"}
    assert line["mask_pixels"] == int(updates[-1].step.mask.sum())


def test_seeding_with_the_answers_mask_starts_from_exactly_that_mask(
    pipeline, frames, answer
) -> None:
    _, seed = pipeline.track(frames[0], answer, TrackSettings(seed_with="masks"))
    np.testing.assert_array_equal(seed.step.mask, answer.mask)


def test_the_object_is_lost_after_n_frames_below_the_threshold(pipeline, frames, answer):
    """A threshold no score reaches: each frame after the seed is below it."""
    track, seed = pipeline.track(
        frames[0], answer, TrackSettings(score_threshold=1.0, lost_after=3)
    )
    assert seed.state is TrackState.TRACKING  # the answer's own frame never counts
    states = [track.update(frame).state for frame in frames[1:4]]
    assert states == [TrackState.TRACKING, TrackState.TRACKING, TrackState.LOST]
    assert not track.active
    with pytest.raises(RuntimeError, match="ended \\(lost\\)"):
        track.update(frames[4])


def test_a_track_times_out_and_can_be_ended(pipeline, frames, answer) -> None:
    settings = TrackSettings(score_threshold=0.0, timeout_s=1.0)
    track, _ = pipeline.track(frames[0], answer, settings, at=10.0)
    assert track.update(frames[1], at=10.5).state is TrackState.TRACKING
    assert track.update(frames[2], at=11.0).state is TrackState.TIMEOUT
    stopped, _ = pipeline.track(frames[0], answer, settings)
    stopped.end(TrackState.STOPPED)
    stopped.end(TrackState.PREEMPTED)  # the first end wins
    assert stopped.state is TrackState.STOPPED


def test_a_bad_frame_mid_track_is_refused_and_the_track_goes_on(pipeline, frames, answer):
    track, _ = pipeline.track(frames[0], answer, TrackSettings(score_threshold=0.0))
    with pytest.raises(ValueError, match="keeps one frame size"):
        track.update(frames[1][:60])
    assert track.active and track.update(frames[1]).step.index == 1


def test_what_cannot_be_tracked_is_a_clear_error(pipeline, frames, answer, tiny_sam2_dir):
    failed = Result.failure("the cup", Status.UNPARSABLE_ANSWER, "no answer")
    with pytest.raises(ValueError, match="only a successful answer"):
        pipeline.track(frames[0], failed)
    with pytest.raises(ValueError, match="must be uint8"):
        pipeline.track(frames[0].astype(np.float32), answer)
    with pytest.raises(ValueError, match="score_threshold"):
        TrackSettings(score_threshold=2.0)
    with pytest.raises(ValueError, match="seed_with"):
        TrackSettings(seed_with="boxes")
    image_only = WisePipeline(pipeline.policy, _image_only(tiny_sam2_dir), owns_models=False)
    try:
        with pytest.raises(TrackingUnsupported, match="no SAM2 video memory"):
            image_only.track(frames[0], answer)
    finally:
        image_only.segmenter.close()
        image_only.close()


def _image_only(folder: Path):
    from wise_perception.segmenter import load_segmenter

    return load_segmenter(folder, device="cpu")
