"""Reading a recorded rosbag2 bag (MCAP or sqlite3) with ``rosbags``, no ROS install needed.

A bag is a rosbag2 folder (``metadata.yaml`` and its storage files) or one storage file
(``.mcap``, ``.db3``). Messages come out in bag time: a message's log time, when the recorder
received it, which is when the node would have. A bag whose recording did not end cleanly (the
recorder was killed, the disk filled, a copy was cut short) is read as far as it goes:

* no ``metadata.yaml``: its storage files are read directly;
* an MCAP file without its closing index (no footer): read record by record with the ``mcap``
  package, up to the last whole chunk, and :attr:`InputBag.end` says where it stopped;
* a sqlite3 file cut short: its rows are read in the order they were written, up to the first
  page that is missing (SQLite's own reader, read-only), and ``end`` says where;
* a read error part-way through: everything before it is replayed, and ``end`` says where.

What cannot be read at all (not a bag, a missing topic, a topic of another type) raises
:class:`BagError` naming the problem, before any model loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
COMMAND_TYPE = "std_msgs/msg/String"
NODE_IMAGE_OUTPUTS = ("mask", "overlay")
STORAGE_SUFFIXES = (".mcap", ".db3")
EXTRA_HINT = "pip install 'wise-perception[replay]'"


class BagError(Exception):
    """A bag that cannot be replayed at all; the message says why and what to do."""


class MissingExtra(ImportError):
    """The optional packages that read bags are not installed (the ``replay`` extra)."""


def typestore() -> Any:
    """rosbags' message classes and CDR (de)serialisation (Humble definitions: the image and
    string messages are the same in every ROS 2 distribution since)."""
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:
        raise MissingExtra(f"reading and writing bags needs rosbags: {EXTRA_HINT}") from exc
    return get_typestore(Stores.ROS2_HUMBLE)


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagEnd:
    """Where a bag stopped before its end: why, and the last message read."""

    reason: str
    last_time_ns: int | None
    messages_read: int

    def describe(self, start_ns: int) -> str:
        last = (
            f"the last at {(self.last_time_ns - start_ns) / 1e9:.3f} s"
            if self.last_time_ns is not None
            else "none read"
        )
        return f"the bag ends early, after {self.messages_read} message(s) ({last}): {self.reason}"


@dataclass(frozen=True)
class BagMessage:
    time_ns: int  # log time: when the recorder received it
    topic: str
    msgtype: str
    raw: bytes  # CDR


@dataclass
class InputBag:
    """One recorded bag: its topics and its messages in bag time."""

    path: Path
    storage: str = ""  # "mcap" or "sqlite3"
    topics: dict[str, Topic] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0  # the last message's log time
    notes: list[str] = field(default_factory=list)  # how it was read, when not plainly
    end: BagEnd | None = None  # set once reading stopped early
    _parts: list[Path] = field(default_factory=list)  # storage files read one by one
    _salvage: bool = False  # MCAP read record by record (no footer)

    @classmethod
    def open(cls, path: Path) -> InputBag:
        """Survey ``path``: storage, topics with their message counts, start time."""
        typestore()  # fails early, with the install hint, without rosbags
        bag = cls(Path(path))
        if not bag.path.exists():
            raise BagError(f"{bag.path} does not exist")
        if bag.path.is_dir() and (bag.path / "metadata.yaml").is_file():
            try:
                bag._survey_with_rosbags(bag.path)
                return bag
            except Exception as exc:
                bag.notes.append(f"metadata.yaml could not be used ({_short(exc)})")
        bag._parts = _storage_files(bag.path)
        if bag.path.is_dir() and not (bag.path / "metadata.yaml").is_file():
            bag.notes.append(
                "no metadata.yaml (the recording did not end cleanly): reading "
                + ", ".join(p.name for p in bag._parts)
            )
        bag._survey_parts()
        return bag

    # ------------------------------------------------------------------ survey
    def _survey_with_rosbags(self, target: Path) -> None:
        from rosbags.rosbag2 import Reader

        with Reader(target) as reader:
            self.storage = _storage_of(reader, target)
            for name, info in reader.topics.items():
                self._add_topic(name, info.msgtype or "", info.msgcount)
            if reader.message_count:
                self.start_ns = min(self.start_ns or reader.start_time, reader.start_time)
                self.end_ns = max(self.end_ns, reader.end_time - 1)  # rosbags: end is exclusive

    def _survey_parts(self) -> None:
        for part in self._parts:
            self.storage = "mcap" if part.suffix == ".mcap" else "sqlite3"
            try:
                self._survey_with_rosbags(part)
                continue
            except Exception as exc:
                problem = _short(exc)
            # Cut short (no MCAP footer, a sqlite3 file missing pages): survey what it holds.
            self._salvage = True
            self.notes.append(f"{part.name} is not whole ({problem}): reading what it holds")
            counts: dict[tuple[str, str], int] = {}
            for message in _salvaged(part, None, self):
                key = (message.topic, message.msgtype)
                counts[key] = counts.get(key, 0) + 1
                self.start_ns = min(self.start_ns or message.time_ns, message.time_ns)
                self.end_ns = max(self.end_ns, message.time_ns)
            for (name, msgtype), count in counts.items():
                self._add_topic(name, msgtype, count)
            if not counts and self.end is not None:
                raise BagError(f"{part} holds no readable message: {self.end.reason}")

    def _add_topic(self, name: str, msgtype: str, count: int) -> None:
        known = self.topics.get(name)
        self.topics[name] = Topic(name, msgtype, count + (known.count if known else 0))

    # ------------------------------------------------------------------ topics
    def describe_topics(self, types: tuple[str, ...] = ()) -> str:
        shown = [t for t in self.topics.values() if not types or t.msgtype in types]
        if not shown:
            return "none"
        return "; ".join(f"{t.name} ({t.msgtype}, {t.count} messages)" for t in shown)

    def image_topic(self, name: str | None) -> Topic:
        """The image topic: ``name``, or the bag's only Image/CompressedImage topic that is not
        one of the node's outputs (``.../mask``, ``.../overlay``: a robot bag may hold them)."""
        if name is None:
            inputs = [
                t
                for t in self.topics.values()
                if t.msgtype in IMAGE_TYPES and _basename(t) not in NODE_IMAGE_OUTPUTS
            ]
            if len(inputs) == 1:
                return inputs[0]
        return self._topic(name, IMAGE_TYPES, "image", "--image-topic")

    def command_topic(self, name: str | None) -> Topic:
        """The command topic: ``name``, or the bag's only String topic named ``.../command``."""
        if name is None:
            named = [
                t for t in self.topics.values() if t.msgtype == COMMAND_TYPE and _is_command(t)
            ]
            if len(named) == 1:
                return named[0]
        return self._topic(name, (COMMAND_TYPE,), "command", "--command-topic")

    def _topic(self, name: str | None, types: tuple[str, ...], role: str, option: str) -> Topic:
        candidates = [t for t in self.topics.values() if t.msgtype in types]
        if name is None:
            if len(candidates) == 1:
                return candidates[0]
            raise BagError(
                f"name the {role} topic with {option}: the bag has "
                f"{len(candidates)} {role} topic(s) of type {' or '.join(types)}: "
                f"{self.describe_topics(types)}"
            )
        topic = self.topics.get(name) or self.topics.get("/" + name.lstrip("/"))
        if topic is None:
            raise BagError(
                f"{role} topic {name} is not in the bag; its topics: {self.describe_topics()}"
            )
        if topic.msgtype not in types:
            raise BagError(
                f"{role} topic {topic.name} has type {topic.msgtype}; a replay reads "
                f"{' or '.join(types)}"
            )
        return topic

    # ------------------------------------------------------------------ messages
    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        """Messages of ``topics`` in bag time (log time order, as the bag's reader gives it).
        Stops at the first part that cannot be read on, setting :attr:`end`."""
        self.end = None
        read, last = 0, None
        targets = [self.path] if not self._parts else self._parts
        for target in targets:
            if self._salvage:
                source = _salvaged(target, topics, self)
            else:
                source = _with_rosbags(target, topics)
            try:
                for message in source:
                    read, last = read + 1, message.time_ns
                    yield message
            except Exception as exc:
                self.end = BagEnd(f"{target.name}: {_short(exc)}", last, read)
            if self.end is not None:
                self.end = BagEnd(self.end.reason, last, read)
                return


def _with_rosbags(target: Path, topics: set[str]) -> Iterator[BagMessage]:
    from rosbags.rosbag2 import Reader

    with Reader(target) as reader:
        connections = [c for c in reader.connections if c.topic in topics]
        if not connections:
            return
        for connection, time_ns, raw in reader.messages(connections=connections):
            yield BagMessage(int(time_ns), connection.topic, connection.msgtype, bytes(raw))


def _salvaged(path: Path, topics: set[str] | None, bag: InputBag) -> Iterator[BagMessage]:
    """The messages of a storage file that is not whole, as far as they can be read; where it
    stopped goes to ``bag.end``."""
    if path.suffix == ".mcap":
        return _salvaged_mcap(path, topics, bag)
    return _salvaged_sqlite(path, topics, bag)


def _cut(path: Path, where: str, exc: BaseException) -> BagEnd:
    return BagEnd(
        f"{path.name} is cut or damaged {where} ({type(exc).__name__}: "
        f"{str(exc) or 'end of file'}); what comes before it was read",
        None,
        0,
    )


def _salvaged_mcap(path: Path, topics: set[str] | None, bag: InputBag) -> Iterator[BagMessage]:
    """An MCAP file read record by record (no index needed), each chunk's messages in log
    time order, until the file ends or stops making sense."""
    try:
        from mcap.records import Channel, Chunk, Message, Schema
        from mcap.stream_reader import StreamReader, breakup_chunk
    except ImportError as exc:
        raise MissingExtra(
            f"reading an MCAP file without its index needs mcap: {EXTRA_HINT}"
        ) from exc
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    with path.open("rb") as stream:
        records = StreamReader(stream, validate_crcs=True, emit_chunks=True).records
        while True:
            start = stream.tell()
            try:
                record = next(records, None)
                inner = (
                    breakup_chunk(record, validate_crc=True)
                    if isinstance(record, Chunk)
                    else [record]
                )
            except Exception as exc:
                where = f"in the record at byte {start} of {path.stat().st_size}"
                bag.end = _cut(path, where, exc)
                return
            if record is None:
                return
            batch = []
            for item in inner:
                if isinstance(item, Schema):
                    schemas[item.id] = item.name
                elif isinstance(item, Channel):
                    channels[item.id] = (item.topic, schemas.get(item.schema_id, ""))
                elif isinstance(item, Message) and item.channel_id in channels:
                    topic, msgtype = channels[item.channel_id]
                    if topics is None or topic in topics:
                        batch.append(BagMessage(int(item.log_time), topic, msgtype, item.data))
            batch.sort(key=lambda m: m.time_ns)  # rosbag2 orders a chunk by log time, too
            yield from batch


def _salvaged_sqlite(path: Path, topics: set[str] | None, bag: InputBag) -> Iterator[BagMessage]:
    """A sqlite3 bag file read row by row in the order the recorder wrote them, up to the first
    page it lacks. ``writable_schema`` lets SQLite open a file shorter than its header says
    (the connection is read-only: nothing is written)."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BagError(f"{path} is not a readable sqlite3 bag: {exc}") from None
    try:
        connection.execute("PRAGMA writable_schema=ON")
        try:
            kinds = {
                topic_id: (name, msgtype)
                for topic_id, name, msgtype in connection.execute(
                    "SELECT id, name, type FROM topics"
                )
            }
        except sqlite3.Error as exc:
            raise BagError(f"{path} is not a readable sqlite3 bag: {exc}") from None
        wanted = [i for i, (name, _) in kinds.items() if topics is None or name in topics]
        if not wanted:
            return
        marks = ",".join("?" for _ in wanted)
        rows = connection.execute(
            f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN ({marks}) "
            "ORDER BY id",
            wanted,
        )
        count = 0
        while True:
            try:
                row = next(rows, None)
            except sqlite3.Error as exc:
                bag.end = _cut(path, f"after {count} message(s)", exc)
                return
            if row is None:
                return
            count += 1
            name, msgtype = kinds[row[0]]
            yield BagMessage(int(row[1]), name, msgtype, bytes(row[2]))
    finally:
        connection.close()


def _storage_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"{path} is not a bag: expected a rosbag2 folder, .mcap or .db3")
        return [path]
    files = [p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES]
    if not files:
        raise BagError(
            f"{path} holds no readable metadata.yaml and no .mcap or .db3 file: not a bag"
        )
    if len({p.suffix for p in files}) > 1:
        raise BagError(f"{path} mixes .mcap and .db3 files; replay one storage at a time")
    return sorted(files, key=_split_index)


def _split_index(path: Path) -> tuple[str, int]:
    """rosbag2 names split files <name>_<n>.<ext>: order them by n."""
    match = re.match(r"(.*?)(?:_(\d+))?$", path.stem)
    assert match is not None
    return match.group(1), int(match.group(2) or 0)


def _storage_of(reader: Any, target: Path) -> str:
    if target.suffix in STORAGE_SUFFIXES:
        return "mcap" if target.suffix == ".mcap" else "sqlite3"
    storage = getattr(getattr(reader, "storage", None), "storages", None)
    if storage:
        return "mcap" if type(storage[0]).__name__.lower().startswith("mcap") else "sqlite3"
    return ""


def _basename(topic: Topic) -> str:
    return topic.name.rstrip("/").rsplit("/", 1)[-1]


def _is_command(topic: Topic) -> bool:
    return _basename(topic) == "command"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
