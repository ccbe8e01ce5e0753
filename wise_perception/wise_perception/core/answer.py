"""Parsing a policy completion into its spans and geometric prompts.

Model output is untrusted: :func:`parse_completion` never raises on it. It returns either a
:class:`ParsedAnswer` or a :class:`ParseFailure` whose ``reason`` is one of
:class:`FailureReason`. It is tolerant of whitespace and markdown code fences, strict about
structure (an ``<answer>`` span holding JSON of the expected schema, finite coordinates,
ordered boxes). Coordinates stay in the policy frame; see :mod:`.geometry` for mapping.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import Enum

from .answer_schema import BOX_LENGTH, POINT_LENGTH, AnswerSchema, answer_template
from .prompts import ANSWER, D_THINK, THINK

# Bound on what the parser will look at: a 1024-token completion is < 8 k characters.
MAX_COMPLETION_CHARS = 32_000
# Coordinates far outside the frame are junk, not a slightly loose box.
COORD_LIMIT_FACTOR = 4.0
# Chatter around the JSON: how many candidate starts to try before giving up.
_MAX_JSON_STARTS = 16

_SPAN_RE = {
    name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in (THINK, ANSWER, D_THINK)
}
_FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


class FailureReason(str, Enum):
    EMPTY = "empty_output"
    TOO_LONG = "output_too_long"
    NO_ANSWER = "missing_answer_tag"
    BAD_JSON = "invalid_json"
    BAD_SCHEMA = "schema_mismatch"
    BAD_BOX = "invalid_box"
    BAD_POINT = "invalid_point"
    NO_OBJECTS = "no_objects"


Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ObjectPrompt:
    """One target: a box (x1, y1, x2, y2) and its positive points, in the policy frame."""

    box: Box
    points: tuple[Point, ...] = ()


@dataclass(frozen=True)
class ParsedAnswer:
    objects: tuple[ObjectPrompt, ...]
    think: str | None = None
    d_think: str | None = None
    answer_text: str = ""
    ok: bool = field(default=True, init=False)


@dataclass(frozen=True)
class ParseFailure:
    reason: FailureReason
    detail: str
    think: str | None = None
    d_think: str | None = None
    ok: bool = field(default=False, init=False)

    def message(self) -> str:
        return f"{self.reason.value}: {self.detail}"


ParseResult = ParsedAnswer | ParseFailure


def extract_span(text: str, name: str, *, strip: bool = True, tags: bool = False) -> str | None:
    """Text of the first ``<name>...</name>`` span (inner, stripped by default); None when absent.

    ``tags=True`` returns the whole span with its tags, as the released reward measures it.
    """
    match = _SPAN_RE[name].search(text)
    if match is None:
        return None
    if tags:
        return match.group(0)
    return match.group(1).strip() if strip else match.group(1)


def _strip_fences(text: str) -> str:
    return _FENCE_RE.sub("", text.strip()).strip()


def _load_json(answer_text: str) -> object:
    """JSON of the answer span. When the span holds chatter around the JSON, the first JSON
    value that decodes wins (the released evaluation takes the first flat ``{...}``)."""
    text = _strip_fences(answer_text)
    try:
        return json.loads(text)
    except ValueError as first_error:  # JSONDecodeError, or an integer over 4,300 digits
        decoder = json.JSONDecoder()
        starts = [m.start() for m in re.finditer(r"[{\[]", text)][:_MAX_JSON_STARTS]
        for start in starts:
            try:
                value = decoder.raw_decode(text, start)[0]
            except ValueError:
                continue
            # A coordinate list inside a truncated object is not the answer.
            if isinstance(value, dict) or (
                value and isinstance(value, list) and isinstance(value[0], dict)
            ):
                return value
        raise first_error


def _number(value: object, what: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is not a number: {_short(value)}")
    # Compared before float(): a model can write 10**400, which float() cannot hold.
    if isinstance(value, int) and abs(value) > limit:
        raise ValueError(f"{what} has {len(str(abs(value)))} digits: far outside the frame")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is not finite: {value!r}")
    if abs(number) > limit:
        raise ValueError(f"{what}={number:g} is far outside the frame")
    return number


def _short(value: object, limit: int = 80) -> str:
    """repr for error messages, bounded: model output can be huge."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _box(value: object, limit: float) -> Box:
    if not isinstance(value, list | tuple) or len(value) != BOX_LENGTH:
        raise ValueError(f"box must be {BOX_LENGTH} numbers, got {_short(value)}")
    x1, y1, x2, y2 = (_number(v, "box coordinate", limit) for v in value)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box corners are not ordered (x1<=x2, y1<=y2): {_short(list(value))}")
    return (x1, y1, x2, y2)


def _point(value: object, limit: float) -> Point:
    if not isinstance(value, list | tuple) or len(value) != POINT_LENGTH:
        raise ValueError(f"point must be {POINT_LENGTH} numbers, got {_short(value)}")
    x, y = (_number(v, "point coordinate", limit) for v in value)
    return (x, y)


_SINGLE = answer_template(AnswerSchema.SINGLE)
_MULTI = answer_template(AnswerSchema.MULTI)


def _keys(keys: tuple[str, ...]) -> str:
    return ", ".join(repr(k) for k in keys)


def _objects_single(data: object, limit: float) -> tuple[ObjectPrompt, ...]:
    keys = (_SINGLE.box_key, *_SINGLE.point_keys)
    if not isinstance(data, dict):
        raise TypeError(f"expected one JSON object with {_keys(keys)}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise KeyError(f"missing keys {missing}")
    box = _box(data[_SINGLE.box_key], limit)
    try:
        points = tuple(_point(data[key], limit) for key in _SINGLE.point_keys)
    except ValueError as exc:
        raise _PointError(str(exc)) from exc
    return (ObjectPrompt(box, points),)


def _objects_multi(data: object, limit: float) -> tuple[ObjectPrompt, ...]:
    box_key, (point_key,) = _MULTI.box_key, _MULTI.point_keys
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise TypeError(f"expected a JSON list of {{{_keys((box_key, point_key))}}} objects")
    objects = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or box_key not in item:
            raise KeyError(f"object {i} has no {box_key!r}")
        box = _box(item[box_key], limit)
        try:
            points = (_point(item[point_key], limit),) if point_key in item else ()
        except ValueError as exc:
            raise _PointError(f"object {i}: {exc}") from exc
        objects.append(ObjectPrompt(box, points))
    return tuple(objects)


class _PointError(ValueError):
    pass


def parse_completion(
    text: object,
    *,
    schema: AnswerSchema | str = AnswerSchema.SINGLE,
    frame: tuple[int, int] = (840, 840),
    max_chars: int = MAX_COMPLETION_CHARS,
) -> ParseResult:
    """Spans and geometric prompts of one completion; never raises on bad model output.

    ``schema="multi"`` also accepts a single-object answer, so a multi-object deployment
    keeps working with the paper's single-object checkpoints.
    """
    if not isinstance(text, str) or not text.strip():
        return ParseFailure(FailureReason.EMPTY, "the policy produced no text")
    if len(text) > max_chars:
        return ParseFailure(FailureReason.TOO_LONG, f"{len(text)} characters > {max_chars}")
    think, d_think = extract_span(text, THINK), extract_span(text, D_THINK)
    answer_text = extract_span(text, ANSWER)
    if answer_text is None:
        return ParseFailure(FailureReason.NO_ANSWER, "no <answer>...</answer> span", think, d_think)
    limit = COORD_LIMIT_FACTOR * max(frame)
    try:
        data = _load_json(answer_text)
    except (ValueError, RecursionError) as exc:  # ValueError includes JSONDecodeError
        return ParseFailure(
            FailureReason.BAD_JSON, f"answer is not JSON ({_short(str(exc), 200)})", think, d_think
        )
    schema = AnswerSchema(schema)
    try:
        if schema is AnswerSchema.SINGLE or (isinstance(data, dict) and _SINGLE.box_key in data):
            objects = _objects_single(data, limit)
        else:
            objects = _objects_multi(data, limit)
    except _PointError as exc:
        return ParseFailure(FailureReason.BAD_POINT, str(exc), think, d_think)
    except (TypeError, KeyError) as exc:
        return ParseFailure(FailureReason.BAD_SCHEMA, str(exc).strip("\"'"), think, d_think)
    except ValueError as exc:
        return ParseFailure(FailureReason.BAD_BOX, str(exc), think, d_think)
    if not objects:
        return ParseFailure(FailureReason.NO_OBJECTS, "the answer lists no object", think, d_think)
    return ParsedAnswer(objects=objects, think=think, d_think=d_think, answer_text=answer_text)
