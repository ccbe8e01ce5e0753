"""The replay's two optional input files, both JSON Lines (one object per line; ``#`` lines and
blank lines are skipped), checked whole before any model loads.

Commands (``--commands``), for a bag recorded without the command topic::

    {"at_s": 12.5, "command": "the red cup", "id": "pick-7"}   # seconds after the bag's start
    {"time_ns": 1733923456500000000, "command": "the mug"}     # or an absolute bag time

``id`` is optional; a command reaches the node's parser as the message it would have been
(plain text, or ``{"id": ..., "command": ...}``).

Labels (``--labels``), one per labelled command, matched by the command's ``id`` or, for a
command sent without one, its ``index`` (1-based order of receipt)::

    {"id": "pick-7", "box": [x1, y1, x2, y2]}        # pixels of the source image
    {"index": 3, "mask": "labels/cup.png"}            # nonzero = the object; relative to the file
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NANOSECONDS = 1_000_000_000
MAX_LINES = 1_000_000  # bounded: a file is read whole


class InputFileError(ValueError):
    """A commands or labels file that cannot be used; the message names the line."""


@dataclass(frozen=True)
class FileCommand:
    time_ns: int
    data: str  # the command message it stands for


@dataclass(frozen=True)
class Label:
    key: str  # "id:<id>" or "index:<n>"
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None  # bool HxW
    source: str = ""  # "file:line", for messages


def read_commands(path: Path, bag_start_ns: int) -> list[FileCommand]:
    """The commands of ``path`` in time order (ties keep the file's order)."""
    commands = []
    for where, obj in _lines(path):
        _only(obj, {"at_s", "time_ns", "command", "id"}, where)
        if ("at_s" in obj) == ("time_ns" in obj):
            raise InputFileError(f"{where}: give exactly one of at_s and time_ns")
        if "at_s" in obj:
            at = obj["at_s"]
            if isinstance(at, bool) or not isinstance(at, int | float) or not at >= 0:
                raise InputFileError(f"{where}: at_s must be a number >= 0, got {at!r}")
            time_ns = bag_start_ns + round(at * NANOSECONDS)
        else:
            time_ns = obj["time_ns"]
            if isinstance(time_ns, bool) or not isinstance(time_ns, int) or time_ns < 0:
                raise InputFileError(f"{where}: time_ns must be an integer >= 0, got {time_ns!r}")
        text = obj.get("command")
        if not isinstance(text, str):
            raise InputFileError(f"{where}: command must be a string, got {text!r}")
        data = json.dumps({"id": obj["id"], "command": text}) if "id" in obj else text
        commands.append(FileCommand(time_ns, data))
    return sorted(commands, key=lambda c: c.time_ns)


def read_labels(path: Path) -> dict[str, Label]:
    """The labels of ``path`` by key (``id:<id>`` or ``index:<n>``); each key once."""
    labels: dict[str, Label] = {}
    for where, obj in _lines(path):
        _only(obj, {"id", "index", "box", "mask"}, where)
        if ("id" in obj) == ("index" in obj):
            raise InputFileError(f"{where}: give exactly one of id and index")
        if ("box" in obj) == ("mask" in obj):
            raise InputFileError(f"{where}: give exactly one of box and mask")
        if "index" in obj:
            index = obj["index"]
            if isinstance(index, bool) or not isinstance(index, int) or index < 1:
                raise InputFileError(f"{where}: index must be an integer >= 1, got {index!r}")
            key = f"index:{index}"
        else:
            key = label_key(obj["id"], 0)
        if key in labels:
            raise InputFileError(f"{where}: a second label for {key} (first: {labels[key].source})")
        if "box" in obj:
            box = obj["box"]
            numbers = isinstance(box, list) and len(box) == 4
            if not numbers or any(
                isinstance(v, bool) or not isinstance(v, int | float) for v in box
            ):
                raise InputFileError(f"{where}: box must be [x1, y1, x2, y2], got {box!r}")
            if not (box[0] <= box[2] and box[1] <= box[3]):
                raise InputFileError(f"{where}: box {box} has x2 < x1 or y2 < y1")
            labels[key] = Label(key, box=tuple(float(v) for v in box), source=where)  # type: ignore[arg-type]
        else:
            labels[key] = Label(
                key, mask=_read_mask(path.parent / str(obj["mask"]), where), source=where
            )
    return labels


def label_key(command_id: Any, index: int) -> str:
    """How a command finds its label: its id, or its index when it was sent without one."""
    return f"id:{json.dumps(command_id)}" if command_id is not None else f"index:{index}"


def _read_mask(path: Path, where: str) -> np.ndarray:
    import cv2

    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if mask is None:
        raise InputFileError(f"{where}: mask {path} is missing or not a readable image")
    return mask > 0


def _lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read {path}: {exc}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if number > MAX_LINES:
            raise InputFileError(f"{path} has more than {MAX_LINES} lines")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path.name}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InputFileError(f"{where}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise InputFileError(f"{where}: each line must be a JSON object")
        out.append((where, obj))
    return out


def _only(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InputFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
