"""Recorded bags for the replay tests, written with rosbags in either storage (as `ros2 bag
record` writes them: rosbag2 folders of MCAP or sqlite3, CDR messages, log time = receipt)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NS = 1_000_000_000
T0 = 1_733_900_000 * NS  # a plausible robot clock (Dec 2024), as bag time and stamps


# Commands the taught test policy answers to a verified margin on any CPU (wise_dev.teach).
QUESTIONS = (
    "the red square",
    "the cup on the left",
    "segment the bottle next to the gripper",
    "the smallest object on the desk",
)


def rgb(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A camera frame like those the taught test policy was verified on (wise_dev.teach): a
    flat rectangle on noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    image[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    return image


@dataclass
class BagBuilder:
    """Frames and commands at bag times (ns after ``T0``), written as a rosbag2 bag."""

    image_topic: str = "/wise/image"
    command_topic: str = "/wise/command"
    messages: list[tuple[int, str, str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_HUMBLE)

    def header(self, frame_id: str, stamp_ns: int | None) -> Any:
        Time = self.store.types["builtin_interfaces/msg/Time"]
        Header = self.store.types["std_msgs/msg/Header"]
        stamp = (
            Time(sec=0, nanosec=0)
            if stamp_ns is None
            else Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
        )
        return Header(stamp=stamp, frame_id=frame_id)

    def image(
        self,
        at_s: float,
        frame_id: str,
        pixels: np.ndarray,
        *,
        stamp_ns: int | str | None = "at",
        encoding: str = "rgb8",
        pad: int = 0,
    ) -> int:
        """An Image received at ``at_s``, stamped then (``stamp_ns``: another stamp, or None
        for an unstamped camera); ``encoding`` relabels the pixels (an unknown one included),
        ``pad`` adds row padding. Returns its log time."""
        time_ns = T0 + round(at_s * NS)
        rows = np.ascontiguousarray(pixels).reshape(pixels.shape[0], -1)
        data = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], 1)
        msg = self.store.types["sensor_msgs/msg/Image"](
            header=self.header(frame_id, time_ns if stamp_ns == "at" else stamp_ns),
            height=pixels.shape[0],
            width=pixels.shape[1],
            encoding=encoding,
            is_bigendian=0,
            step=data.shape[1],
            data=data.reshape(-1),
        )
        self.messages.append((time_ns, self.image_topic, "sensor_msgs/msg/Image", msg))
        return time_ns

    def compressed(self, at_s: float, frame_id: str, pixels: np.ndarray, fmt: str = "png") -> int:
        """A CompressedImage (``fmt``: its format string; png or jpeg data by its codec)."""
        from PIL import Image

        time_ns = T0 + round(at_s * NS)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG" if "jpeg" in fmt else "PNG")
        msg = self.store.types["sensor_msgs/msg/CompressedImage"](
            header=self.header(frame_id, time_ns),
            format=fmt,
            data=np.frombuffer(buffer.getvalue(), np.uint8),
        )
        self.messages.append((time_ns, self.image_topic, "sensor_msgs/msg/CompressedImage", msg))
        return time_ns

    def command(self, at_s: float, text: str, command_id: Any = None) -> int:
        time_ns = T0 + round(at_s * NS)
        data = text if command_id is None else json.dumps({"id": command_id, "command": text})
        msg = self.store.types["std_msgs/msg/String"](data=data)
        self.messages.append((time_ns, self.command_topic, "std_msgs/msg/String", msg))
        return time_ns

    def damaged(self, at_s: float, topic: str, msgtype: str, data: bytes) -> int:
        """Bytes that are not a ``msgtype`` message, recorded on ``topic`` anyway."""
        time_ns = T0 + round(at_s * NS)
        self.messages.append((time_ns, topic, msgtype, data))
        return time_ns

    def steady(self, count: int, height: int = 48, width: int = 64) -> BagBuilder:
        """A frame every 0.5 s (``f<i>``) and a command 0.1 s after each (id ``i``)."""
        for i in range(count):
            self.image(i * 0.5, f"f{i}", rgb(i, height, width))
            self.command(i * 0.5 + 0.1, QUESTIONS[i % len(QUESTIONS)], i)
        return self

    def write(self, path: Path, storage: str = "mcap") -> Path:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(path, version=8, storage_plugin=plugin) as writer:
            connections: dict[tuple[str, str], Any] = {}
            for time_ns, topic, msgtype, msg in sorted(self.messages, key=lambda m: m[0]):
                key = (topic, msgtype)
                if key not in connections:
                    connections[key] = writer.add_connection(topic, msgtype, typestore=self.store)
                raw = msg if isinstance(msg, bytes) else self.store.serialize_cdr(msg, msgtype)
                writer.write(connections[key], time_ns, raw)
        return path


def storage_file(bag: Path) -> Path:
    """The one storage file of a rosbag2 folder."""
    (found,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return found
