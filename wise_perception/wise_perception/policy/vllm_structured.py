"""vLLM's structured outputs for WISE completions: a regular expression of the tagged spans
with the answer schema's JSON inside (a JSON schema alone cannot express the tags around the
answer). Used by the in-process engine and the server client alike."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.prompts import ANSWER, D_THINK, THINK, AnswerSchema

# The longest rationale span the regex admits (characters), and the coordinate digits (3: the
# 840x840 policy frame; the parser still checks the values).
MAX_SPAN_CHARS = 512
_COORD = r"\d{1,3}"


def completion_regex(
    spans: Sequence[str] = (THINK, ANSWER),
    schema: AnswerSchema | str = AnswerSchema.SINGLE,
    *,
    max_span_chars: int = MAX_SPAN_CHARS,
    max_objects: int = 8,
) -> str:
    """A regular expression of a WISE completion: the ``spans`` in order, the rationale spans
    free text without ``<``/``>`` (at most ``max_span_chars``), the answer span the ``schema``'s
    JSON with integer coordinates (``single``: bbox + points_1 + points_2; ``multi``: a list of
    1..``max_objects`` bbox_2d + point_2d objects). What the parser (core.answer) accepts."""
    # A literal optional space, not \s: \s admits a no-break space, which JSON does not.
    box = rf"\[{_COORD}, ?{_COORD}, ?{_COORD}, ?{_COORD}\]"
    point = rf"\[{_COORD}, ?{_COORD}\]"
    if AnswerSchema(schema) is AnswerSchema.SINGLE:
        answer = rf'\{{"bbox": {box}, "points_1": {point}, "points_2": {point}\}}'
    else:
        item = rf'\{{"bbox_2d": {box}, "point_2d": {point}\}}'
        answer = rf"\[{item}(, {item}){{0,{max_objects - 1}}}\]"
    parts = []
    for span in spans:
        if span not in (THINK, D_THINK, ANSWER):
            raise ValueError(f"unknown span {span!r}")
        inner = answer if span == ANSWER else rf"[^<>]{{1,{int(max_span_chars)}}}"
        parts.append(f"<{span}>{inner}</{span}>")
    return "".join(parts)


def structured_regex(
    structured_output: bool | str, schema: AnswerSchema | str, spans: Sequence[str]
) -> str | None:
    """``structured_output``: False/None (off), True (:func:`completion_regex` of ``spans`` and
    ``schema``) or a regular expression of the caller's own."""
    if not structured_output:
        return None
    if structured_output is True:
        return completion_regex(spans, schema)
    return str(structured_output)
