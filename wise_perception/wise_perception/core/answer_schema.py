"""The answer schema: key names and shapes of the JSON a completion's ``<answer>`` span holds.

The one place that spells it. Everything else is derived from :func:`answer_template`: the
example answer the prompt shows (:mod:`.prompts`), the parser (:mod:`.answer`), the forced
answer schema of the transformers engine and vLLM's structured-output regular expression.

Single-object answer (the paper's models; the released WISE code's example)::

    {"bbox": [x1,y1,x2,y2], "points_1": [x,y], "points_2": [x,y]}

Multi-object answer (VisionReasoner's later schema, Seg-Zero repository)::

    [{"bbox_2d": [x1,y1,x2,y2], "point_2d": [x,y]}, {"bbox_2d": [...], "point_2d": [...]}]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class AnswerSchema(str, Enum):
    """JSON schema of the <answer> span."""

    # The paper's models: one object in the 840x840 frame (released code's example answer).
    SINGLE = "single"
    # VisionReasoner's later multi-object schema: a list of objects with one point each.
    MULTI = "multi"


BOX_LENGTH = 4  # x1, y1, x2, y2
POINT_LENGTH = 2  # x, y
# Single-object schema: one box and two points ("two largest inscribed circles", §3.1).
BOX_KEY = "bbox"
POINT_KEYS = ("points_1", "points_2")
# Multi-object schema: a box and one point per object.
MULTI_BOX_KEY = "bbox_2d"
MULTI_POINT_KEY = "point_2d"

# How the released answers are written: no space between coordinates, ", " between members
# and between the objects of a list.
COORDINATE_SEPARATOR = ","
MEMBER_SEPARATOR = ", "
LIST_OPEN, OBJECT_SEPARATOR, LIST_CLOSE = "[", ", ", "]"

NUMBER = None  # where a coordinate goes in a template's pieces
Piece = str | None


@dataclass(frozen=True)
class AnswerTemplate:
    """The text of an answer as literal pieces and coordinate slots (:data:`NUMBER`).

    ``object``: one object, e.g. ``('{"bbox": [', NUMBER, ',', ..., ']}')``; ``listed``: the
    objects stand in a JSON list (``[obj, obj]``, multi) rather than alone (single).
    ``members``: each key with how many coordinates it holds, in order.
    """

    schema: AnswerSchema
    members: tuple[tuple[str, int], ...]
    object: tuple[Piece, ...]
    listed: bool

    @property
    def box_key(self) -> str:
        return self.members[0][0]

    @property
    def point_keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.members[1:])


def merge_literals(pieces: Sequence[Piece]) -> tuple[Piece, ...]:
    """Adjacent literal pieces joined into one (slots stay apart)."""
    merged: list[Piece] = []
    for piece in pieces:
        if piece is not NUMBER and merged and merged[-1] is not NUMBER:
            merged[-1] = merged[-1] + piece
        elif piece != "":
            merged.append(piece)
    return tuple(merged)


def _object(members: Sequence[tuple[str, int]], quote: str) -> tuple[Piece, ...]:
    parts: list[Piece] = ["{"]
    for i, (key, length) in enumerate(members):
        if i:
            parts.append(MEMBER_SEPARATOR)
        parts.append(f"{quote}{key}{quote}: [")
        for j in range(length):
            if j:
                parts.append(COORDINATE_SEPARATOR)
            parts.append(NUMBER)
        parts.append("]")
    parts.append("}")
    return merge_literals(parts)


def answer_template(schema: AnswerSchema | str, *, quote: str = '"') -> AnswerTemplate:
    """The schema's template. ``quote``: the key quote, ``'`` for Seg-Zero's own prompt
    example (not JSON; only the prompt shows it)."""
    schema = AnswerSchema(schema)
    if schema is AnswerSchema.SINGLE:
        members = ((BOX_KEY, BOX_LENGTH), *((key, POINT_LENGTH) for key in POINT_KEYS))
    else:
        members = ((MULTI_BOX_KEY, BOX_LENGTH), (MULTI_POINT_KEY, POINT_LENGTH))
    return AnswerTemplate(
        schema, members, _object(members, quote), listed=schema is AnswerSchema.MULTI
    )


Coordinates = Sequence[float]
AnswerObject = tuple[Coordinates, Sequence[Coordinates]]  # (box, points)


def format_answer(
    objects: Sequence[AnswerObject], schema: AnswerSchema | str, *, quote: str = '"'
) -> str:
    """The answer text of ``objects`` ((box, points) each) as the schema writes it: one object
    with two points (single), or a list of objects with one point each (multi)."""
    template = answer_template(schema, quote=quote)
    if not template.listed and len(objects) != 1:
        raise ValueError(f"the {template.schema.value} schema holds one object, got {len(objects)}")
    texts = []
    for box, points in objects:
        values = [box, *points]
        if [len(v) for v in values] != [length for _, length in template.members]:
            raise ValueError(f"{template.schema.value} objects are {template.members}")
        numbers = iter(json.dumps(x) for value in values for x in value)
        texts.append("".join(next(numbers) if p is NUMBER else p for p in template.object))
    if not template.listed:
        return texts[0]
    return LIST_OPEN + OBJECT_SEPARATOR.join(texts) + LIST_CLOSE
