"""One policy's replay folder: what was replayed, written as it happens, so nothing is lost.

::

    <out>/<label>/replay.json     what is replayed (bag, topics, settings, policy) and how far
    <out>/<label>/results.jsonl   one line per command, in the order the node decided them
    <out>/<label>/masks/NNNNNN.png      the mask of a success (0/255), command NNNNNN
    <out>/<label>/overlays/NNNNNN.png   the overlay, wherever the command had a usable image
    <out>/<label>/tracks.jsonl    one line per ``track`` message of a tracked command, in order
    <out>/<label>/track_masks/NNNNNNN.png  the tracked mask of ``tracks.jsonl`` line NNNNNNN
    <out>/<label>/bag/            the output bag (:mod:`.output_bag`), rebuilt from the above

A command's pictures are written (to a temporary name, then renamed) before its line, and the
line is flushed to disk before the next command: a replay stopped any way (Ctrl+C, a kill, a
power cut) keeps every command whose line is there, and a restart with the same bag and
settings continues after them. A line cut by the stop is dropped on restart and replayed.

A track's state (SAM2's memory) is not journaled, so a replay stopped while a command's track
ran continues from that command: its line, and every line after it in both journals, are
dropped on restart and replayed (the same, since a replay is deterministic).
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
        self.tracks = root / "tracks.jsonl"
        self.track_masks = root / "track_masks"
        self.bag = root / "bag"
        self._track_lines: int | None = None  # tracks.jsonl's lines, counted once

    def open(self, identity: dict[str, Any], *, restart: bool = False) -> dict[int, dict[str, Any]]:
        """Prepare the folder for a replay described by ``identity``; returns the commands
        already replayed (by index). A folder of another replay is refused unless ``restart``."""
        if restart:
            for path in (self.manifest, self.journal, self.tracks):
                path.unlink(missing_ok=True)
            for folder in (self.masks, self.overlays, self.track_masks):
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
        self.track_masks.mkdir(exist_ok=True)
        done = self._drop_unfinished_track(self.records(), self.track_records())
        if not self.manifest.is_file():
            self.write_manifest({"format": FORMAT, "identity": identity, "complete": False})
        return {r["index"]: r for r in done}

    def records(self) -> list[dict[str, Any]]:
        """The journal's lines; a last line cut by a stop is dropped (and cut off the file)."""
        return _read_lines(self.journal)

    def track_records(self) -> list[dict[str, Any]]:
        """``tracks.jsonl``'s lines (a last line cut by a stop dropped, as in :meth:`records`)."""
        return _read_lines(self.tracks)

    def _drop_unfinished_track(
        self, records: list[dict[str, Any]], tracks: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Cut both journals back to before the last tracked command when its track's end is
        not journaled (module doc); returns the command lines kept."""
        tracked = [r for r in records if _track_state(r["result"]) == "tracking"]
        if not tracked or self._manifest_finished():
            return records
        last = tracked[-1]["index"]
        lines = [t for t in tracks if t["index"] == last]
        if lines and lines[-1]["track"]["state"] != "tracking":
            return records  # it ended: lost, timed out, failed, preempted or stopped
        kept = records[: next(i for i, r in enumerate(records) if r["index"] == last)]
        _rewrite(self.journal, kept)
        _rewrite(self.tracks, [t for t in tracks if t["index"] < last])
        self._track_lines = None
        return kept

    def _manifest_finished(self) -> bool:
        return self.manifest.is_file() and bool(self.read_manifest().get("finished"))

    def append_track(self, record: dict[str, Any], mask: np.ndarray | None) -> dict[str, Any]:
        """Write one ``track`` message's mask, then its line (durably), numbered in order."""
        if self._track_lines is None:
            self._track_lines = len(self.track_records())
        self._track_lines += 1
        number = self._track_lines
        record = {"line": number, **record, "mask": None}
        if mask is not None:
            record["mask"] = _write_png(self.track_masks / f"{number:07d}.png", mask)
        _append_line(self.tracks, record)
        return record

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
        _append_line(self.journal, record)
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


def _read_lines(journal: Path) -> list[dict[str, Any]]:
    """A journal's lines; a last line cut by a stop is dropped (and cut off the file)."""
    if not journal.is_file():
        return []
    raw = journal.read_bytes()
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
                raise JournalError(f"{journal} line {number} is damaged") from None
            with journal.open("r+b") as stream:  # the line the stop cut
                stream.truncate(min(good_end, len(raw)))
    return records


def _append_line(journal: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record) + "\n"  # key order kept: the result is the node's JSON
    with journal.open("a", encoding="utf-8") as stream:
        stream.write(line)
        stream.flush()
        os.fsync(stream.fileno())


def _rewrite(journal: Path, records: list[dict[str, Any]]) -> None:
    temporary = journal.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(temporary, journal)


def _track_state(result: dict[str, Any]) -> str | None:
    """The state a command's result gave its track (None: not asked to track)."""
    track = result.get("track")
    return track.get("state") if isinstance(track, dict) else None


def _write_png(path: Path, pixels: np.ndarray) -> str:
    import cv2

    array = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    temporary = path.with_name(path.name + ".tmp.png")
    if not cv2.imwrite(str(temporary), array):
        raise OSError(f"could not write {temporary}")
    os.replace(temporary, path)
    return f"{path.parent.name}/{path.name}"
