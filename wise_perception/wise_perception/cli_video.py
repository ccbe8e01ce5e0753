"""``wise-segment VIDEO "command"``: reason on one frame, then track the object to the end.

The policy answers on the first readable frame at or after ``--at`` seconds; SAM2's video memory
(:mod:`.tracking`) follows the answer through every later frame. Written into ``--out``:

* ``STEM_result.json``: the answer (the single-image result, plus its frame's index and time);
* ``STEM_answer.png``: the answer drawn on its frame;
* ``STEM_masks/NNNNNN.png``: one 0/255 mask per frame from the answer on (stream frame index);
* ``STEM_track.jsonl``: one line per frame: index, time, track state, score, box, objects;
* ``STEM_overlay.mp4``: the frames from the answer on, the tracked mask and state drawn.

The object is ``lost`` when its score stays below ``--score-threshold`` for ``--lost-after``
frames; later frames then get empty masks, or, with ``--reground-on-loss``, the policy is asked
again on the frame after the loss and a new track starts from its answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.limits import image_size_problem
from .core.prompts import Question
from .result import Result
from .segmenter.tracking import TrackingUnsupported
from .tracking import Track, TrackSettings, TrackState, TrackUpdate
from .video_files import Frame, VideoFileError, open_frames

if TYPE_CHECKING:
    from .pipeline import WisePipeline

EXIT_OK, EXIT_NOT_OK, EXIT_BAD_INPUT, EXIT_LOAD_FAILED = 0, 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that apply to a video or an image folder only."""
    group = parser.add_argument_group("video or image folder (reason once, then track)")
    group.add_argument(
        "--at",
        type=float,
        default=0.0,
        help="reason on the first frame at or after this many seconds (default: 0)",
    )
    group.add_argument(
        "--max-frames",
        type=int,
        default=10_000,
        help="read at most this many frames of the stream (default: %(default)s)",
    )
    group.add_argument(
        "--fps",
        type=float,
        default=15.0,
        help="frame rate of an image folder (default: %(default)s)",
    )
    group.add_argument(
        "--score-threshold",
        type=float,
        default=TrackSettings.score_threshold,
        help="tracking score below which a frame counts as not seeing the object "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--lost-after",
        type=int,
        default=TrackSettings.lost_after,
        help="frames in a row below the threshold before the object is lost (default: %(default)s)",
    )
    group.add_argument(
        "--reground-on-loss",
        action="store_true",
        help="when the object is lost, ask the policy again on the next frame",
    )
    group.add_argument(
        "--seed-with",
        choices=["prompts", "masks"],
        default=TrackSettings.seed_with,
        help="seed the tracker with the answer's boxes and points, or with its masks "
        "(default: %(default)s)",
    )


def settings_problem(args: argparse.Namespace) -> str:
    """Why the video options cannot be used ("" when they can): checked before loading."""
    if args.at < 0:
        return f"--at must be >= 0 seconds, got {args.at}"
    if args.max_frames < 1:
        return f"--max-frames must be >= 1, got {args.max_frames}"
    if not args.fps > 0:
        return f"--fps must be > 0, got {args.fps}"
    try:
        TrackSettings(
            score_threshold=args.score_threshold,
            lost_after=args.lost_after,
            seed_with=args.seed_with,
        )
    except ValueError as exc:
        return str(exc)
    return ""


def segment_video(args: argparse.Namespace, question: Question, say: Any) -> int:
    """The video / folder flow of ``wise-segment`` (module doc); returns the exit code."""
    from .cli import _fit, _output_folder_problem, load_pipeline

    problem = settings_problem(args)
    if problem:
        print(f"wise-segment: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        source = open_frames(args.image, max_frames=args.max_frames, folder_fps=args.fps)
    except VideoFileError as exc:
        print(f"wise-segment: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = _output_folder_problem(args.out)
    if problem:
        print(f"wise-segment: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    frames = source.frames()
    answer = next((f for f in frames if f.time_s >= args.at and f.pixels is not None), None)
    if answer is None:
        where = f" at or after {args.at} s" if args.at else ""
        print(f"wise-segment: {args.image} has no readable frame{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    height, width = answer.pixels.shape[:2]
    problem = image_size_problem(width, height, args.max_image_pixels)
    if problem and not args.downscale:
        print(
            f"wise-segment: {args.image}: frames of {problem}; pass --downscale to shrink them "
            "to fit, or raise --max-image-pixels",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT

    def served(pixels: np.ndarray) -> np.ndarray:
        """What the models see: the frame, or with --downscale a shrunk copy (the files are
        written at the frame's own size)."""
        return _fit(pixels, args.max_image_pixels) if problem else pixels

    pipeline = load_pipeline(args, say)
    if isinstance(pipeline, int):
        return pipeline
    try:
        try:  # before reasoning: a SAM2 that cannot track fails at once
            pipeline.segmenter.tracker().close()
        except TrackingUnsupported as exc:
            print(f"wise-segment: this SAM2 cannot track: {exc}", file=sys.stderr)
            return EXIT_LOAD_FAILED
        settings = TrackSettings(
            score_threshold=args.score_threshold,
            lost_after=args.lost_after,
            seed_with=args.seed_with,
        )
        with _Outputs(
            args.out, Path(args.image), (height, width), source.fps, question.sent
        ) as out:
            tracked, seconds, regrounds, state = 0, 0.0, 0, TrackState.TRACKING
            say(f"reasoning on frame {answer.index} ({answer.time_s:.2f} s)")
            first, track = _ground(pipeline, settings, question, answer, served, out)
            if track is None:
                return EXIT_NOT_OK
            say("tracking")
            for frame in frames:
                if frame.pixels is None:
                    out.note(frame, frame.problem)
                    continue
                if not track.active:
                    if track.state is TrackState.LOST and args.reground_on_loss:
                        say(f"lost; reasoning again on frame {frame.index}")
                        _, again = _ground(pipeline, settings, question, frame, served, out)
                        if again is not None:
                            track, regrounds = again, regrounds + 1
                            continue
                    out.note(frame, f"not tracked: the track ended ({track.state.value})")
                    continue
                try:
                    update = track.update(served(frame.pixels), at=frame.time_s)
                except ValueError as exc:  # a frame the tracker refuses: the track goes on
                    out.note(frame, str(exc))
                    continue
                except Exception as exc:  # the tracker failed: the track ends, files stay
                    out.note(frame, f"tracking failed: {track.error or exc}")
                    continue
                tracked += 1
                seconds += update.step.seconds
                out.tracked(frame, update)
            state = track.state
    finally:
        pipeline.close()
    rate = f"{tracked / seconds:.1f}" if seconds else "-"
    print(
        f"ok: answered on frame {answer.index}, tracked {tracked} frame(s) at {rate} frames/s, "
        f"final state {state.value}"
        + (f", {regrounds} re-grounding(s)" if regrounds else "")
        + (f", cut at --max-frames {args.max_frames}" if source.truncated else "")
        + f" | {first.rationale} -> {args.out}"
    )
    return EXIT_OK


def _ground(
    pipeline: WisePipeline,
    settings: TrackSettings,
    question: Question,
    frame: Frame,
    served: Callable[[np.ndarray], np.ndarray],
    out: _Outputs,
) -> tuple[Result, Track | None]:
    """Ask the policy on ``frame`` and seed a new track with its answer; writes the answer.
    Returns (result, track), track None when the answer is not ``ok``."""
    from .cli import _to_original

    height, width = frame.pixels.shape[:2]
    pixels = served(frame.pixels)
    result = pipeline.segment(pixels, question)
    track = None
    if result.ok:
        track, update = pipeline.track(pixels, result, settings, at=frame.time_s)
    if result.image_size != (width, height):  # --downscale: the files are at full size
        if result.ok:
            _to_original(result, width, height)
        result.image_size = (width, height)
    out.answer(frame, result)
    if track is None:
        completion = result.to_dict()["completion"]
        if completion:
            print(f"wise-segment: completion: {completion}", file=sys.stderr)
        print(f"{result.status.value}: {result.error} (frame {frame.index}); nothing tracked")
        return result, None
    out.tracked(frame, update, answer=result)
    return result, track


class _Outputs:
    """The files of one run (module doc), at the stream's frame size."""

    def __init__(
        self, folder: Path, source: Path, size: tuple[int, int], fps: float, command: str
    ) -> None:
        import cv2

        stem = source.stem or source.name
        self.size = size
        self.command = command
        self.result_path = folder / f"{stem}_result.json"
        self.answer_path = folder / f"{stem}_answer.png"
        self.masks = folder / f"{stem}_masks"
        self.masks.mkdir(parents=True, exist_ok=True)
        self.log = (folder / f"{stem}_track.jsonl").open("w", encoding="utf-8")
        height, width = size
        self.video_path = folder / f"{stem}_overlay.mp4"
        self.video = cv2.VideoWriter(
            str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
        )
        if not self.video.isOpened():
            print(
                f"wise-segment: cannot write {self.video_path} (no mp4v encoder in this OpenCV); "
                "masks and track.jsonl are still written",
                file=sys.stderr,
            )

    def __enter__(self) -> _Outputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.close()
        self.video.release()

    def answer(self, frame: Frame, result: Result) -> None:
        import cv2

        from .visualize import overlay

        self.result_path.write_text(
            result.to_json(frame_index=frame.index, time_s=round(frame.time_s, 6)) + "\n",
            encoding="utf-8",
        )
        picture = cv2.cvtColor(overlay(frame.pixels, result), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(self.answer_path), picture)

    def tracked(self, frame: Frame, update: TrackUpdate, answer: Result | None = None) -> None:
        """One tracked frame; on the answer's own frame (``answer``), the answer's mask and
        picture stand for it (the track's seed step is logged)."""
        import cv2

        from .visualize import mask_to_uint8, overlay, track_overlay

        update = self._full_size(update)
        shown = answer.mask if answer is not None else update.step.mask
        cv2.imwrite(str(self.masks / f"{frame.index:06d}.png"), mask_to_uint8(shown, self.size))
        self._line(frame, update.to_dict())
        if self.video.isOpened():
            picture = (
                overlay(frame.pixels, answer)
                if answer is not None
                else track_overlay(frame.pixels, update, self.command)
            )
            self.video.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))

    def note(self, frame: Frame, problem: str) -> None:
        """A frame without a tracked mask: why, in the log; an empty mask; the frame as is."""
        import cv2

        from .visualize import mask_to_uint8

        self._line(frame, {"problem": problem})
        cv2.imwrite(str(self.masks / f"{frame.index:06d}.png"), mask_to_uint8(None, self.size))
        if self.video.isOpened() and frame.pixels is not None:
            self.video.write(cv2.cvtColor(frame.pixels, cv2.COLOR_RGB2BGR))

    def _line(self, frame: Frame, fields: dict[str, Any]) -> None:
        head = {"index": frame.index, "time_s": round(frame.time_s, 6)}
        if frame.name:
            head["file"] = frame.name
        self.log.write(json.dumps({**head, **fields}) + "\n")

    def _full_size(self, update: TrackUpdate) -> TrackUpdate:
        """The update at the stream's frame size (it was computed on a --downscale copy)."""
        height, width = self.size
        mask = update.step.mask
        if mask.shape == (height, width):
            return update
        import cv2

        from .segmenter.tracking import TrackedObject, TrackStep, mask_box

        def grow(m: np.ndarray) -> np.ndarray:
            return (
                cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            )

        objects = []
        for obj in update.step.objects:
            big = grow(obj.mask)
            objects.append(TrackedObject(mask=big, box=mask_box(big), score=obj.score))
        step = TrackStep(update.step.index, objects, grow(mask), update.step.seconds)
        return TrackUpdate(step=step, state=update.state, low_frames=update.low_frames)
