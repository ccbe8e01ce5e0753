"""One policy's replay folder: what was replayed, written as it happens, so nothing is lost.

::

    <out>/<label>/replay.json     what is replayed (bag, topics, settings, policy) and how far
    <out>/<label>/results.jsonl   one line per command, in the order the node decided them
    <out>/<label>/masks/NNNNNN.png      the mask of a success (0/255), command NNNNNN
    <out>/<label>/overlays/NNNNNN.png   the overlay, wherever the command had a usable image
    <out>/<label>/bag/            the output bag (:mod:`.output_bag`), rebuilt from the above

A command's pictures are written (to a temporary name, then renamed) before its line, and the
line is flushed to disk before the next command: a replay stopped any way (Ctrl+C, a kill, a
power cut) keeps every command whose line is there, and a restart with the same bag and
settings continues after them. A line cut by the stop is dropped on restart and replayed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1


class JournalError(Exception):
    """A replay folder that cannot be continued (another bag or settings, a damaged line)."""


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = root / "replay.json"
        self.journal = root / "results.jsonl"
        self.masks = root / "masks"
        self.overlays = root / "overlays"
        self.bag = root / "bag"

    def open(self, identity: dict[str, Any], *, restart: bool = False) -> dict[int, dict[str, Any]]:
        """Prepare the folder for a replay described by ``identity``; returns the commands
        already replayed (by index). A folder of another replay is refused unless ``restart``."""
        if restart:
            for path in (self.manifest, self.journal):
                path.unlink(missing_ok=True)
            for folder in (self.masks, self.overlays):
                for picture in folder.glob("*.png") if folder.is_dir() else ():
                    picture.unlink()
        if self.manifest.is_file():
            previous = json.loads(self.manifest.read_text(encoding="utf-8"))
            if previous.get("identity") != identity:
                changed = sorted(
                    k
                    for k in set(identity) | set(previous.get("identity", {}))
                    if identity.get(k) != previous.get("identity", {}).get(k)
                )
                raise JournalError(
                    f"{self.root} holds a replay of another bag or settings (differs in: "
                    f"{', '.join(changed)}); pass --restart to replace it, or another --out"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        self.masks.mkdir(exist_ok=True)
        self.overlays.mkdir(exist_ok=True)
        done = self.records()
        if not self.manifest.is_file():
            self.write_manifest({"format": FORMAT, "identity": identity, "complete": False})
        return {r["index"]: r for r in done}

    def records(self) -> list[dict[str, Any]]:
        """The journal's lines; a last line cut by a stop is dropped (and cut off the file)."""
        if not self.journal.is_file():
            return []
        raw = self.journal.read_bytes()
        lines = raw.split(b"\n")
        records, good_end = [], 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                good_end += len(line) + 1
                continue
            try:
                records.append(json.loads(line))
                good_end += len(line) + 1
            except ValueError:
                if number < len(lines):  # a whole line that does not parse: not ours to fix
                    raise JournalError(f"{self.journal} line {number} is damaged") from None
                with self.journal.open("r+b") as stream:  # the line the stop cut
                    stream.truncate(min(good_end, len(raw)))
        return records

    def append(
        self, record: dict[str, Any], mask: np.ndarray | None, overlay: np.ndarray | None
    ) -> dict[str, Any]:
        """Write one command's pictures, then its line (durably); returns the line written."""
        name = f"{record['index']:06d}.png"
        record = {**record, "mask": None, "overlay": None}
        if mask is not None:
            record["mask"] = _write_png(self.masks / name, mask)
        if overlay is not None:
            record["overlay"] = _write_png(self.overlays / name, overlay)
        line = json.dumps(record) + "\n"  # key order kept: the result is the node's JSON
        with self.journal.open("a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())
        return record

    def picture(self, relative: str | None, *, color: bool) -> np.ndarray | None:
        """A picture the journal names (RGB, or a 2-D mask), or None."""
        if relative is None:
            return None
        import cv2

        path = self.root / relative
        if color:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text(encoding="utf-8"))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        temporary = self.manifest.with_suffix(".json.tmp")
        temporary.write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        os.replace(temporary, self.manifest)


def _write_png(path: Path, pixels: np.ndarray) -> str:
    import cv2

    array = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    temporary = path.with_name(path.name + ".tmp.png")
    if not cv2.imwrite(str(temporary), array):
        raise OSError(f"could not write {temporary}")
    os.replace(temporary, path)
    return f"{path.parent.name}/{path.name}"
