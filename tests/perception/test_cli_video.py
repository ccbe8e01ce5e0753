"""``wise-segment VIDEO COMMAND``: reason on one frame, track to the end, with the tiny models.

The taught tiny policy answers the same box on any frame; the tiny SAM2 with video memory
(random weights) tracks it. What is checked is the run's contract: which frame is answered,
one mask and one log line per frame from there on, the overlay video, the ends of a track,
and clear errors before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from wise_dev.moving_shapes import make_stream
from wise_perception import cli
from wise_perception.pipeline import WisePipeline

FPS = 10
FRAMES = 12


def _refuse_loading(monkeypatch) -> None:
    def loading(*args, **kwargs):
        raise AssertionError("the models were loaded before the input was checked")

    monkeypatch.setattr(WisePipeline, "from_pretrained", loading)


@pytest.fixture(scope="module")
def stream():
    return make_stream(3, length=FRAMES, height=120, width=160)


@pytest.fixture(scope="module")
def video(stream, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (160, 120))
    for frame in stream.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _run(source: Path, out: Path, policy: Path, sam2: Path, *extra: str) -> int:
    args = [str(source), "the red square", "--model", str(policy), "--segmenter", str(sam2)]
    args += ["--device", "cpu", "--max-new-tokens", "96", "--out", str(out), *extra]
    return cli.main(args)


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _frames_of(video: Path) -> int:
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_a_video_is_answered_at_a_time_and_tracked_to_its_end(
    video, taught_policy_dir, tiny_sam2_video_dir, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    args = ["--at", "0.5", "--score-threshold", "0"]  # never lost: every frame is tracked
    assert _run(video, out, taught_policy_dir, tiny_sam2_video_dir, *args) == 0
    summary = capsys.readouterr().out.strip()
    answered = 5  # the first frame at or after 0.5 s at 10 frames per second
    assert summary.startswith(f"ok: answered on frame {answered}, tracked {FRAMES - answered - 1}")
    result = json.loads((out / "clip_result.json").read_text())
    assert result["status"] == "ok" and result["frame_index"] == answered
    assert result["time_s"] == pytest.approx(0.5)
    masks = sorted((out / "clip_masks").iterdir())
    assert [m.name for m in masks] == [f"{i:06d}.png" for i in range(answered, FRAMES)]
    first = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert first.shape == (120, 160) and set(np.unique(first)) <= {0, 255}
    assert int((first == 255).sum()) == result["mask_pixels"]  # the answer's own mask
    lines = _log(out / "clip_track.jsonl")
    assert [line["index"] for line in lines] == list(range(answered, FRAMES))
    assert [line["frame_index"] for line in lines] == list(range(FRAMES - answered))
    for line, mask in zip(lines[1:], masks[1:], strict=True):
        assert line["state"] in ("tracking", "lost")
        pixels = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        assert line["mask_pixels"] == int((pixels == 255).sum())
    assert _frames_of(out / "clip_overlay.mp4") == FRAMES - answered
    assert cv2.imread(str(out / "clip_answer.png")).shape == (120, 160, 3)


def test_a_folder_of_images_with_a_bad_file_is_tracked_past_it(
    stream, taught_policy_dir, tiny_sam2_video_dir, tmp_path, capsys
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(stream.frames[:6]):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (folder / "f3.png").write_bytes(b"not a png")  # a broken frame mid-stream
    cv2.imwrite(str(folder / "f10.png"), np.zeros((60, 80, 3), np.uint8))  # another size
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert _run(folder, out, taught_policy_dir, tiny_sam2_video_dir, "--fps", "5") == 0
    lines = _log(out / "frames_track.jsonl")
    assert [line.get("file") for line in lines] == [f"f{i}.png" for i in (0, 1, 2, 3, 4, 5, 10)]
    assert "truncated or corrupt" in lines[3]["problem"] or "not an image" in lines[3]["problem"]
    assert "differs from the stream's 160x120" in lines[6]["problem"]
    assert lines[5]["time_s"] == pytest.approx(1.0)  # index 5 at 5 frames per second
    assert len(list((out / "frames_masks").iterdir())) == 7  # an (empty) mask for every frame
    assert "tracked 4 frame(s)" in capsys.readouterr().out


def test_losing_the_object_reasks_the_policy_when_asked_to(
    video, taught_policy_dir, tiny_sam2_video_dir, tmp_path, capsys
) -> None:
    """A threshold no score reaches: every tracked frame is below it, so the object is lost
    after one frame; with --reground-on-loss the next frame is answered again."""
    out = tmp_path / "out"
    args = ["--score-threshold", "1.0", "--lost-after", "1", "--max-frames", "6"]
    assert (
        _run(video, out, taught_policy_dir, tiny_sam2_video_dir, *args, "--reground-on-loss") == 0
    )
    states = [line.get("state", line.get("problem")) for line in _log(out / "clip_track.jsonl")]
    assert states == ["tracking", "lost", "tracking", "lost", "tracking", "lost"]
    summary = capsys.readouterr().out
    assert "2 re-grounding(s)" in summary and "cut at --max-frames 6" in summary
    assert "final state lost" in summary

    plain = tmp_path / "plain"
    assert _run(video, plain, taught_policy_dir, tiny_sam2_video_dir, *args[:4]) == 0
    lines = _log(plain / "clip_track.jsonl")
    assert lines[1]["state"] == "lost"
    assert all("the track ended (lost)" in line["problem"] for line in lines[2:])


def test_an_image_only_sam2_cannot_track(video, taught_policy_dir, tiny_sam2_dir, tmp_path, capsys):
    assert _run(video, tmp_path / "out", taught_policy_dir, tiny_sam2_dir) == 3
    assert "cannot track" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: p.write_bytes(b"garbage" * 50), (), "is not a video this OpenCV build"),
        (lambda p: p.mkdir(), (), "holds no images"),
        (None, ("--at", "60"), "has no readable frame at or after 60.0 s"),
        (None, ("--at", "-1"), "--at must be >= 0"),
        (None, ("--max-frames", "0"), "--max-frames must be >= 1"),
        (None, ("--lost-after", "0"), "lost_after must be >= 1"),
        (None, ("--max-image-pixels", "100"), "pass --downscale"),
    ],
)
def test_bad_input_exits_2_before_loading(
    make, extra, message, video, tmp_path, monkeypatch, capsys
) -> None:
    _refuse_loading(monkeypatch)
    source = video
    if make is not None:
        source = tmp_path / "broken.mp4"
        make(source)
    assert cli.main([str(source), "the cup", "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err
