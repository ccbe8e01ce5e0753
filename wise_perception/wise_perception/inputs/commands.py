"""Command messages -> checked commands, for any message with a ``data`` string
(std_msgs/String from rclpy in the node, from rosbags in the replay, or a commands file).

Commands (:func:`parse_command`) are plain text, or a JSON object
``{"id": "pick-7", "command": "the red cup"}`` whose ``id`` (a string of at most
:data:`MAX_ID_CHARS` characters, or a number) is echoed in the command's result so a caller
can match results to commands. ``"track": true`` (or false) asks the node to follow the answer
through later frames (or not), whatever its ``track_default``; ``{"stop": true}`` (an ``id``
allowed, no ``command``) ends the running track. Sizes are checked with the same ``core`` functions and limits
the pipeline uses, once: a valid command comes out as a ``core.prompts.Question``, which the
pipeline does not check again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..core.prompts import Question, check_question

# A caller's id is a handle, not a payload: long enough for a UUID with a prefix.
MAX_ID_CHARS = 128
# A command message may carry JSON escapes (``\\uXXXX`` is 6 characters for 1), an id and
# some blanks; one longer than this is refused unread, so its size costs only its length.
_JSON_OVERHEAD = 8
_COMMAND_KEYS = frozenset({"id", "command", "track", "stop"})


@dataclass(frozen=True)
class Command:
    """A command message, read: its text as sent (for the echo), the caller's id, and either
    the checked command (``question``) or why it is invalid (``error``)."""

    text: str
    id: str | int | float | None = None
    error: str = ""
    question: Question | None = None
    track: bool | None = None  # "track" as sent; None: the node's track_default
    stop: bool = False  # {"stop": true}: end the running track, nothing to segment


def parse_command(data: str, max_chars: int) -> Command:
    """Read a ``command`` message: plain text, or ``{"id": ..., "command": "..."}``.

    A message whose first non-blank character is ``{`` is read as JSON. Never raises: a bad
    message comes back with ``error`` set, the id it carried when that id could be read, and
    the command text (or the raw message) for the echo, which results bound.
    """
    if len(data) > _JSON_OVERHEAD * max_chars + MAX_ID_CHARS:
        return Command(data, None, f"command has {len(data)} characters; the limit is {max_chars}")
    text: Any = data
    ident: str | int | float | None = None
    track: bool | None = None
    if data.lstrip().startswith("{"):
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            where = (
                f" ({exc.msg} at character {exc.pos})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            return Command(
                data, None, f"command looks like JSON but does not parse{where}; {_FORMS}"
            )
        if not isinstance(obj, dict):
            return Command(data, None, f"a JSON command must be an object; {_FORMS}")
        ident, id_error = _read_id(obj.get("id"))
        if id_error:
            return Command(_text_or(obj, data), None, id_error)
        unknown = sorted(str(k) for k in obj if k not in _COMMAND_KEYS)
        if unknown:
            return Command(_text_or(obj, data), ident, f"unknown key(s) {unknown}; {_FORMS}")
        for flag in ("track", "stop"):
            if flag in obj and not isinstance(obj[flag], bool):
                value = type(obj[flag]).__name__
                return Command(
                    _text_or(obj, data), ident, f'"{flag}" must be true or false, got {value}'
                )
        if obj.get("stop"):
            if "command" in obj or "track" in obj:
                return Command(data, ident, f'a stop takes no "command" or "track"; {_FORMS}')
            return Command("stop", ident, stop=True)
        if "command" not in obj:
            return Command(data, ident, f'a JSON command needs a "command" key; {_FORMS}')
        text = obj["command"]
        if not isinstance(text, str):
            return Command(data, ident, f'"command" must be a string, got {type(text).__name__}')
        track = obj.get("track")
    try:
        return Command(text, ident, question=check_question(text, max_chars), track=track)
    except ValueError as exc:
        return Command(text, ident, str(exc), track=track)


_FORMS = (
    'send plain text, {"id": "<string or number>", "command": "<text>", "track": true|false} '
    '("id" and "track" optional), or {"stop": true}'
)


def _text_or(obj: dict[str, Any], raw: str) -> str:
    text = obj.get("command")
    return text if isinstance(text, str) else raw


def _read_id(value: Any) -> tuple[str | int | float | None, str]:
    """The caller's id and "" , or None and why it cannot be echoed."""
    if value is None:
        return None, ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, f'"id" must be a string or a number, got {type(value).__name__}'
    if isinstance(value, float) and not math.isfinite(value):
        return None, f'"id" must be a finite number, got {value}'
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        return None, f'"id" has {len(value)} characters; the limit is {MAX_ID_CHARS}'
    if isinstance(value, int) and abs(value) >= 2**63:
        return None, '"id" must fit in 64 bits'
    return value, ""
