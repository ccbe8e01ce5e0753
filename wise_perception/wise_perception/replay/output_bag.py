"""The output bag: the node's output topics, as the node would have published them.

A rosbag2 folder with one MCAP file (readable by rosbags, the ``mcap`` package, Foxglove and
``ros2 bag``), written from a replay folder's journal: every command's ``result`` (the node's
JSON, one per command), and for a success its ``mask`` (mono8 0/255), ``rationale`` and
``overlay`` (rgb8), each with the header of the frame it was computed on (a failure without a
frame: the bag time of the decision and an empty frame_id, as the node stamps it with its
clock). A tracked command's ``track`` messages (``tracks.jsonl``) follow: each on ``track``
(the node's JSON) and, for a tracked frame or a re-grounded answer, its mask on ``mask``, with
the header of the frame it was computed on. A message's log time is the bag time at which the
node made it (a command's decision, a tracked frame's receipt), so the output lines up with
the input bag in a viewer. Topics are ``<namespace>/<name>``.

It is written aside (``.writing/bag``) and moved in place when complete, so a stop while it
is written leaves the previous one (and the journal, from which the next run writes it again).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs.images import image_fields
from ..visualize import mask_to_uint8
from .bag import typestore
from .journal import RunFolder

STRING, IMAGE = "std_msgs/msg/String", "sensor_msgs/msg/Image"

# The node's output topics (node/lifecycle.py's table) and how a journal line becomes each
# one's message (None: nothing on that topic for this command).
OUTPUT_TOPICS: dict[str, str] = {
    "result": STRING,
    "mask": IMAGE,
    "rationale": STRING,
    "overlay": IMAGE,
    "track": STRING,
}
# At one bag time: a track's end (by the command the worker takes) comes before that command's
# result, and the result before the frames its track follows.
_END, _RESULT, _TRACKED = 0, 1, 2


def write_output_bag(
    folder: RunFolder,
    records: list[dict[str, Any]],
    namespace: str,
    tracks: list[dict[str, Any]] | None = None,
) -> Path:
    """(Re)write ``folder``'s output bag from its journal ``records`` and ``tracks``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    writing = folder.root / ".writing"  # the storage file is named after its folder: bag.mcap
    shutil.rmtree(writing, ignore_errors=True)
    writing.mkdir()
    partial = writing / folder.bag.name
    builders = _builders(folder, store)
    with Writer(partial, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {
            name: writer.add_connection(f"{namespace.rstrip('/')}/{name}", msgtype, typestore=store)
            for name, msgtype in OUTPUT_TOPICS.items()
        }
        timeline = [((r["decided_ns"], _RESULT, r["index"], 0), r, None) for r in records]
        for t in tracks or []:
            rank = _END if t["kind"] == "ended" else _TRACKED
            timeline.append(((t["at_ns"], rank, t["index"], t["line"]), None, t))
        for (time_ns, *_), record, track in sorted(timeline, key=lambda item: item[0]):
            if record is not None:
                header = _header(store, record["result"])
                messages = {name: build(record, header) for name, build in builders.items()}
            else:
                header = _header(store, track["track"])
                messages = _track_messages(folder, store, track, header)
            for name, msg in messages.items():
                if msg is not None:
                    raw = store.serialize_cdr(msg, OUTPUT_TOPICS[name])
                    writer.write(connections[name], time_ns, raw)
    shutil.rmtree(folder.bag, ignore_errors=True)
    partial.rename(folder.bag)
    writing.rmdir()
    return folder.bag


Builder = Callable[[dict[str, Any], Any], Any]


def _builders(folder: RunFolder, store: Any) -> dict[str, Builder]:
    String = store.types[STRING]

    def result(record: dict[str, Any], header: Any) -> Any:
        return String(data=json.dumps(record["result"]))  # the node's JSON, as Result.to_json

    def mask(record: dict[str, Any], header: Any) -> Any:
        pixels = folder.picture(record["mask"], color=False)
        if not _ok(record) or pixels is None:
            return None
        return _image(store, header, mask_to_uint8(pixels > 0, pixels.shape), "mono8")

    def rationale(record: dict[str, Any], header: Any) -> Any:
        return String(data=record["result"]["rationale"]) if _ok(record) else None

    def overlay(record: dict[str, Any], header: Any) -> Any:
        pixels = folder.picture(record["overlay"], color=True)
        return _image(store, header, pixels, "rgb8") if _ok(record) and pixels is not None else None

    return {"result": result, "mask": mask, "rationale": rationale, "overlay": overlay}


def _track_messages(
    folder: RunFolder, store: Any, track: dict[str, Any], header: Any
) -> dict[str, Any]:
    """A ``tracks.jsonl`` line's messages: its ``track`` JSON and its mask (if any)."""
    pixels = folder.picture(track["mask"], color=False)
    mask = (
        None
        if pixels is None
        else _image(store, header, mask_to_uint8(pixels > 0, pixels.shape), "mono8")
    )
    return {"track": store.types[STRING](data=json.dumps(track["track"])), "mask": mask}


def _ok(record: dict[str, Any]) -> bool:
    return record["result"]["status"] == "ok"


def _header(store: Any, message: dict[str, Any]) -> Any:
    """The header a node message (the result's or a track's JSON) names: stamp, frame_id."""
    result = message
    Time = store.types["builtin_interfaces/msg/Time"]
    Header = store.types["std_msgs/msg/Header"]
    stamp = Time(sec=int(result["stamp"]["sec"]), nanosec=int(result["stamp"]["nanosec"]))
    return Header(stamp=stamp, frame_id=result["frame_id"])


def _image(store: Any, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    fields = image_fields(pixels, encoding)
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return store.types[IMAGE](header=header, **fields)
