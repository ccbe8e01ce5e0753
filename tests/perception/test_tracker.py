"""The SAM2 tracker against transformers' own streaming API, its bounded memory, and its errors.

Tiny random SAM2 with video memory (``wise_dev.tiny_models.build_tiny_sam2_video``: 3 memories,
4 object pointers, so a short stream already fills the memory bank and the bound applies),
float32 on the CPU, frames from the synthetic moving-shapes streams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wise_dev.moving_shapes import make_stream
from wise_dev.tiny_models import build_tiny_sam2_video
from wise_perception.core.answer import ObjectPrompt
from wise_perception.segmenter import TrackingUnsupported, load_segmenter
from wise_perception.segmenter.sam2_meta import TRACKING_UNSUPPORTED, Sam2MetaSegmenter
from wise_perception.segmenter.sam2_video import Sam2VideoTracker
from wise_perception.segmenter.tracking import mask_box

FRAMES = 14  # more than the 3 memories and 4 pointers the tiny model reads
OBJECTS = [
    ObjectPrompt((30.0, 20.0, 90.0, 80.0), ((60.0, 50.0),)),
    ObjectPrompt((80.0, 40.0, 150.0, 110.0), ((100.0, 60.0), (130.0, 90.0))),  # 2 points
]


@pytest.fixture(scope="module")
def segmenter(tiny_sam2_video_dir: Path):
    loaded = load_segmenter(tiny_sam2_video_dir, device="cpu", dtype="float32")
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return make_stream(7, length=FRAMES, height=120, width=160).frames


def _reference(folder: Path, frames: np.ndarray, objects, masks=None):
    """Masks and object scores of transformers' documented streaming use, session unbounded:
    ``init_video_session``, prompts on frame 0, then ``model(inference_session, frame=...)``
    for each frame as it comes, ``post_process_masks`` to the frame's size."""
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    model = Sam2VideoModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor = Sam2VideoProcessor.from_pretrained(folder)
    session = processor.init_video_session(inference_device="cpu", dtype=torch.float32)
    out_masks, out_scores = [], []
    for index, frame in enumerate(frames):
        inputs = processor(images=frame, return_tensors="pt")
        if index == 0:
            for obj_id, obj in enumerate(objects, start=1):
                if masks is not None:
                    prompt = {"input_masks": [masks[obj_id - 1]]}
                else:
                    prompt = {
                        "input_boxes": [[list(obj.box)]],
                        "input_points": [[[list(p) for p in obj.points]]],
                        "input_labels": [[[1] * len(obj.points)]],
                        "original_size": inputs["original_sizes"][0],
                    }
                processor.add_inputs_to_inference_session(
                    session, frame_idx=0, obj_ids=obj_id, **prompt
                )
            session.obj_with_new_inputs = list(range(1, len(objects) + 1))
        output = model(inference_session=session, frame=inputs["pixel_values"][0])
        (masks_t,) = processor.post_process_masks(
            [output.pred_masks], original_sizes=inputs["original_sizes"]
        )
        out_masks.append(masks_t[:, 0].numpy())
        out_scores.append(torch.sigmoid(output.object_score_logits).reshape(-1).numpy())
    # The unbounded session holds every frame: what the tracker must not do on a stream.
    assert len(session.processed_frames) == len(frames)
    return out_masks, out_scores


@pytest.mark.parametrize("seed_with", ["prompts", "masks"])
def test_masks_equal_transformers_streaming_api(
    segmenter, tiny_sam2_video_dir, frames, seed_with
) -> None:
    seed_masks = None
    if seed_with == "masks":
        seed_masks = [np.zeros(frames.shape[1:3], bool) for _ in OBJECTS]
        seed_masks[0][20:80, 30:90] = True
        seed_masks[1][40:110, 80:150] = True
    tracker = segmenter.tracker()
    steps = [tracker.start(frames[0], OBJECTS, masks=seed_masks)]
    steps += [tracker.step(frame) for frame in frames[1:]]
    want_masks, want_scores = _reference(tiny_sam2_video_dir, frames, OBJECTS, seed_masks)
    assert [s.index for s in steps] == list(range(FRAMES))
    if seed_masks is not None:  # the seed frame's output is the seed mask, as given
        want_masks[0] = np.stack(seed_masks)
    for step, masks, scores in zip(steps, want_masks, want_scores, strict=True):
        assert len(step.objects) == len(OBJECTS)
        for obj, mask, score in zip(step.objects, masks, scores, strict=True):
            np.testing.assert_array_equal(obj.mask, mask)
            assert obj.score == pytest.approx(float(score), abs=1e-6)
            assert obj.box == mask_box(mask)
        np.testing.assert_array_equal(step.mask, masks.any(axis=0))
        assert step.score == max(o.score for o in step.objects)
    # Something was segmented (the comparison is not of empty masks everywhere).
    assert any(step.mask.any() for step in steps)


def test_the_segmenter_and_its_trackers_share_one_image_encoder(segmenter) -> None:
    first, second = segmenter.tracker(), segmenter.tracker()
    assert first.model is second.model  # the video model is loaded once
    assert first.model.vision_encoder is segmenter.model.vision_encoder


def test_memory_stays_bounded_over_a_long_stream(tmp_path: Path) -> None:
    """1,000 frames: the tracker holds the seed frame, the memory bank's windows and nothing
    more, and the bytes it holds stop changing once the windows are full. (Time per frame and
    the process's RSS over such a stream are figures of ``wise-bench --track``.) The tiny
    model at 128x128, four times cheaper per frame, same memory windows."""
    folder = build_tiny_sam2_video(tmp_path / "sam2_video", image_size=128)
    tracker = Sam2VideoTracker.from_pretrained(folder, device="cpu")
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    tracker.start(stream[0], OBJECTS[:1])
    assert tracker.memory().memory_frames == 0
    window = max(tracker.memory_window, tracker.pointer_window)
    sizes = []
    for index in range(1, 1000):
        tracker.step(stream[index % len(stream)])
        info = tracker.memory()
        assert info.conditioning_frames == 1
        assert info.memory_frames == min(index, window)
        if index >= 50:
            sizes.append(info.state_bytes)
    assert tracker.frames_seen == 1000
    assert len(set(sizes)) == 1, "the state kept growing or shrinking after the windows filled"
    session = tracker._session
    assert len(session.processed_frames) == 0  # no frame pixels are kept
    tracked = session.output_dict_per_obj[0]["non_cond_frame_outputs"]
    assert sorted(tracked) == list(range(1000 - window, 1000))
    # Only the last memory_window frames keep their memories; older ones only their pointer.
    with_memory = [f for f, out in tracked.items() if "maskmem_features" in out]
    assert with_memory == list(range(1000 - tracker.memory_window, 1000))


def test_an_image_only_checkpoint_cannot_track(tiny_sam2_dir: Path) -> None:
    image_only = load_segmenter(tiny_sam2_dir, device="cpu")
    try:
        with pytest.raises(TrackingUnsupported, match="no SAM2 video memory weights"):
            image_only.tracker()
    finally:
        image_only.close()


def test_the_meta_backend_says_why_it_cannot_track() -> None:
    """Read in sam2 1.1.0: its video predictor takes a whole MP4 or JPEG folder up front."""
    meta = Sam2MetaSegmenter(predictor=None)
    with pytest.raises(TrackingUnsupported) as caught:
        meta.tracker()
    assert str(caught.value) == TRACKING_UNSUPPORTED
    assert "MP4" in TRACKING_UNSUPPORTED and "transformers backend" in TRACKING_UNSUPPORTED


def test_bad_input_is_a_clear_error(segmenter, frames) -> None:
    tracker = segmenter.tracker()
    with pytest.raises(RuntimeError, match="call start first"):
        tracker.step(frames[0])
    with pytest.raises(ValueError, match="no objects"):
        tracker.start(frames[0], [])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        tracker.start(frames[0].astype(np.float32), OBJECTS)
    with pytest.raises(ValueError, match="one 120x160 mask per object"):
        tracker.start(frames[0], OBJECTS, masks=[np.zeros((120, 160), bool)])
    tracker.start(frames[0], OBJECTS)
    with pytest.raises(ValueError, match="keeps one frame size"):
        tracker.step(frames[0][:60])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        tracker.step(frames[0][..., 0])
    assert tracker.step(frames[1]).index == 1  # the track survives the bad frames


def test_a_new_start_forgets_the_previous_track(segmenter, frames) -> None:
    tracker = segmenter.tracker()
    tracker.start(frames[0], OBJECTS)
    for frame in frames[1:6]:
        tracker.step(frame)
    restarted = tracker.start(frames[5], OBJECTS[:1])
    assert restarted.index == 0 and len(restarted.objects) == 1
    assert tracker.memory().memory_frames == 0
    fresh = segmenter.tracker().start(frames[5], OBJECTS[:1])
    np.testing.assert_array_equal(restarted.mask, fresh.mask)


def test_a_closed_segmenter_gives_no_tracker(tiny_sam2_video_dir: Path) -> None:
    loaded = load_segmenter(tiny_sam2_video_dir, device="cpu")
    loaded.close()
    with pytest.raises(RuntimeError, match="closed"):
        loaded.tracker()


def test_standalone_tracker_loads_from_a_folder(tmp_path: Path, frames) -> None:
    folder = build_tiny_sam2_video(tmp_path / "sam2_video", seed=1, image_size=128)
    tracker = Sam2VideoTracker.from_pretrained(folder, device="cpu")
    step = tracker.start(frames[0], OBJECTS[:1])
    assert step.mask.shape == frames.shape[1:3]
    assert 0.0 <= step.score <= 1.0
