"""Reading a recorded stream offline: a video file OpenCV reads, or a folder of images, as frames.

Used by ``wise-segment VIDEO COMMAND``. Bounded: at most ``max_frames`` frames are read (a
longer stream is cut there and says so), every frame is RGB uint8 of the first frame's size.
A file that is not a readable video, a folder without images, or a time past the end is a
:class:`VideoFileError` naming the file; one unreadable image (or one of another size) in a
folder is a frame with a ``problem`` and no pixels, and reading goes on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .image_files import ImageFileError, read_rgb

# Suffixes read as single images (PIL), everything else is tried as a video (OpenCV).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm"}
)
DEFAULT_MAX_FRAMES = 10_000  # about 11 minutes at 15 frames per second
DEFAULT_FOLDER_FPS = 15.0
_MAX_FOLDER_ENTRIES = 1_000_000  # a folder is listed once; a bigger one is refused


class VideoFileError(ValueError):
    """The path cannot be read as a stream of frames; the message names it and says why."""


@dataclass
class Frame:
    index: int  # position in the stream (0-based, skipped frames counted)
    time_s: float  # index / fps
    name: str  # the image file's name in a folder; "" in a video
    pixels: np.ndarray | None  # HxWx3 uint8 RGB; None when the frame could not be read
    problem: str = ""  # why there are no pixels


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


class FrameSource:
    """Frames of a video file or an image folder, in order (see :func:`open_frames`)."""

    def __init__(self, path: Path, fps: float, count: int | None, max_frames: int) -> None:
        self.path = path
        self.fps = fps
        self.count = count  # frames in the stream, when the container says (None: unknown)
        self.max_frames = max_frames
        self.truncated = False  # True when reading stopped at max_frames
        self.size: tuple[int, int] | None = None  # (height, width) of the first frame

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _bounded(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if frame.index >= self.max_frames:
                self.truncated = True
                return
            if frame.pixels is not None:
                shape = frame.pixels.shape[:2]
                if self.size is None:
                    self.size = shape
                elif shape != self.size:
                    frame = Frame(
                        frame.index,
                        frame.time_s,
                        frame.name,
                        None,
                        f"{shape[1]}x{shape[0]} differs from the stream's "
                        f"{self.size[1]}x{self.size[0]}",
                    )
            yield frame


class _VideoFile(FrameSource):
    def frames(self) -> Iterator[Frame]:
        return self._bounded(self._read())

    def _read(self) -> Iterator[Frame]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else None
                problem = "" if rgb is not None else f"unexpected frame shape {bgr.shape}"
                yield Frame(index, index / self.fps, "", rgb, problem)
                index += 1
        finally:
            capture.release()


class _ImageFolder(FrameSource):
    def __init__(self, path: Path, files: list[Path], fps: float, max_frames: int) -> None:
        super().__init__(path, fps, len(files), max_frames)
        self.files = files

    def frames(self) -> Iterator[Frame]:
        return self._bounded(self._read())

    def _read(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            try:
                pixels, problem = read_rgb(file), ""
            except ImageFileError as exc:
                pixels, problem = None, str(exc)
            yield Frame(index, index / self.fps, file.name, pixels, problem)


def _natural_key(path: Path) -> list[object]:
    """frame_2.png before frame_10.png."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def open_frames(
    path: str | Path,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    folder_fps: float = DEFAULT_FOLDER_FPS,
) -> FrameSource:
    """A video file (any container and codec this OpenCV build reads) or a folder of images
    (sorted by name, numbers in names compared as numbers, taken at ``folder_fps``)."""
    import cv2

    path = Path(path)
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if not path.exists():
        raise VideoFileError(f"{path} does not exist")
    if path.is_dir():
        files = []
        for entry in path.iterdir():
            if len(files) >= _MAX_FOLDER_ENTRIES:
                raise VideoFileError(f"{path} holds more than {_MAX_FOLDER_ENTRIES} images")
            if entry.is_file() and is_image_file(entry):
                files.append(entry)
        if not files:
            raise VideoFileError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return _ImageFolder(path, sorted(files, key=_natural_key), folder_fps, max_frames)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoFileError(f"{path} is not a video this OpenCV build can read")
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, _ = capture.read()
        if not ok:
            raise VideoFileError(f"{path} holds no frame that can be decoded")
    finally:
        capture.release()
    fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FOLDER_FPS
    return _VideoFile(path, fps, count if count > 0 else None, max_frames)
