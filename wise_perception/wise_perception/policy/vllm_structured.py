"""vLLM's structured outputs for WISE completions: a regular expression of the tagged spans
with the answer schema's JSON inside (a JSON schema alone cannot express the tags around the
answer). Used by the in-process engine and the server client alike; the answer part is
written from the schema's template (core.answer_schema), so it admits what the parser reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.answer_schema import (
    COORDINATE_SEPARATOR,
    LIST_CLOSE,
    LIST_OPEN,
    NUMBER,
    OBJECT_SEPARATOR,
    AnswerSchema,
    answer_template,
)
from ..core.prompts import ANSWER, D_THINK, THINK, PromptSpec

# The longest rationale span the regex admits (characters), and a coordinate: a JSON integer
# (no leading zero: JSON has none, so "007" would not parse) of at most 3 digits (the 840x840
# policy frame; the parser still checks the values).
MAX_SPAN_CHARS = 512
COORDINATE_REGEX = r"(0|[1-9]\d{0,2})"
_SPECIAL = set(r"\.^$*+?{}[]()|")


def _literal(text: str) -> str:
    """``text`` as a regex that matches it literally (only regex syntax escaped: the engines
    behind vLLM's structured outputs read ``\\{`` but not every escape ``re.escape`` writes)."""
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def answer_regex(schema: AnswerSchema | str, *, max_objects: int = 8) -> str:
    """The answer span's JSON: the schema's template with integer coordinates (a literal
    optional space after a coordinate's comma, not ``\\s``: ``\\s`` admits a no-break space,
    which JSON does not); multi: a list of 1..``max_objects`` objects."""
    template = answer_template(schema)
    separator = _literal(COORDINATE_SEPARATOR)
    parts = []
    for piece in template.object:
        if piece is NUMBER:
            parts.append(COORDINATE_REGEX)
        elif piece == COORDINATE_SEPARATOR:
            parts.append(separator + " ?")
        else:
            parts.append(_literal(piece))
    item = "".join(parts)
    if not template.listed:
        return item
    more = f"({_literal(OBJECT_SEPARATOR)}{item}){{0,{max_objects - 1}}}"
    return _literal(LIST_OPEN) + item + more + _literal(LIST_CLOSE)


def completion_regex(
    spans: Sequence[str] = (THINK, ANSWER),
    schema: AnswerSchema | str = AnswerSchema.SINGLE,
    *,
    max_span_chars: int = MAX_SPAN_CHARS,
    max_objects: int = 8,
) -> str:
    """A regular expression of a WISE completion: the ``spans`` in order, the rationale spans
    free text without ``<``/``>`` (at most ``max_span_chars``), the answer span
    :func:`answer_regex`. What the parser (core.answer) accepts."""
    answer = answer_regex(schema, max_objects=max_objects)
    parts = []
    for span in spans:
        if span not in (THINK, D_THINK, ANSWER):
            raise ValueError(f"unknown span {span!r}")
        inner = answer if span == ANSWER else rf"[^<>]{{1,{int(max_span_chars)}}}"
        parts.append(f"<{span}>{inner}</{span}>")
    return "".join(parts)


def structured_regex(structured_output: bool | str, spec: PromptSpec | None) -> str | None:
    """The regex a request is constrained by: ``structured_output`` False/None (off), a regular
    expression of the caller's own, or True: :func:`completion_regex` of the request's prompt
    spec (its span order and answer schema; none without a spec)."""
    if not structured_output:
        return None
    if structured_output is True:
        return completion_regex(spec.order, spec.schema) if spec is not None else None
    return str(structured_output)
