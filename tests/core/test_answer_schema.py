"""One answer schema (core.answer_schema), and every form derived from it agrees with the parser:
the prompt's example answers, vLLM's structured-output regex (sampled from the regex itself)
and the forced schema's pieces."""

from __future__ import annotations

import json
import random
import re

import pytest

from wise_perception.core.answer import ObjectPrompt, ParsedAnswer, parse_completion
from wise_perception.core.answer_schema import (
    NUMBER,
    AnswerSchema,
    answer_template,
    format_answer,
)
from wise_perception.core.prompts import (
    EXAMPLE_ANSWERS,
    SEG_ZERO_EXAMPLE_ANSWER,
    build_instruction,
    spec_for,
)
from wise_perception.policy.transformers.forced_schema import (
    MULTI_CLOSE,
    MULTI_INSIDE,
    MULTI_NEXT,
    MULTI_OPEN,
    SINGLE_SEQUENCE,
)
from wise_perception.policy.vllm_structured import answer_regex, completion_regex

try:  # Python >= 3.11
    import re._parser as sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse  # type: ignore[no-redef]


def test_example_answers_are_the_released_text_byte_for_byte() -> None:
    """Released checkpoints were trained on exactly these examples (the released evaluation.py
    and rl_dataset.py; VisionReasoner's; Seg-Zero's own single-quoted one)."""
    assert EXAMPLE_ANSWERS[AnswerSchema.SINGLE] == (
        '{"bbox": [10,100,200,210], "points_1": [30,110], "points_2": [35,180]}'
    )
    assert EXAMPLE_ANSWERS[AnswerSchema.MULTI] == (
        '[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
        '{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]'
    )
    assert SEG_ZERO_EXAMPLE_ANSWER == (
        "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"
    )
    multi = build_instruction("all mugs", spec_for("wise_s", schema="multi"))
    assert f"<answer>{EXAMPLE_ANSWERS[AnswerSchema.MULTI]}</answer>" in multi


def _objects(schema: AnswerSchema, rng: random.Random) -> list[ObjectPrompt]:
    """Random objects of the schema, in the policy frame, with ordered boxes."""
    count = 1 if schema is AnswerSchema.SINGLE else rng.randint(1, 8)
    points = 2 if schema is AnswerSchema.SINGLE else 1
    objects = []
    for _ in range(count):
        x1, x2 = sorted(rng.randint(0, 839) for _ in range(2))
        y1, y2 = sorted(rng.randint(0, 839) for _ in range(2))
        pts = tuple((rng.randint(x1, x2), rng.randint(y1, y2)) for _ in range(points))
        objects.append(ObjectPrompt((x1, y1, x2, y2), pts))
    return objects


def _parsed(answer: str, schema: AnswerSchema) -> tuple[ObjectPrompt, ...]:
    parsed = parse_completion(f"<think> x </think><answer>{answer}</answer>", schema=schema)
    assert isinstance(parsed, ParsedAnswer), (answer, parsed)
    return parsed.objects


@pytest.mark.parametrize("schema", list(AnswerSchema))
def test_what_the_schema_writes_the_parser_reads_back(schema: AnswerSchema) -> None:
    rng = random.Random(0)
    for _ in range(200):
        objects = _objects(schema, rng)
        written = format_answer([(o.box, o.points) for o in objects], schema)
        assert _parsed(written, schema) == tuple(objects)
    template = answer_template(schema)
    assert template.box_key in written and all(key in written for key in template.point_keys)


# ---------------------------------------------------------------------- the vLLM regex


def _sample(pattern: object, rng: random.Random) -> str:
    """A random string of the regex's language, generated from its parse tree (the subset a
    completion regex uses): an independent check of what the regex admits."""
    out = []
    for op, arg in pattern:  # type: ignore[attr-defined]
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append(rng.choice([c for c in "ab c.," if c != chr(arg)]))
        elif name == "IN":
            out.append(_sample_set(arg, rng))
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = arg
            high = min(high, low + 3)  # long enough to exercise repeats, short to read
            out.extend(_sample(sub, rng) for _ in range(rng.randint(low, high)))
        elif name == "SUBPATTERN":
            out.append(_sample(arg[-1], rng))
        elif name == "BRANCH":
            out.append(_sample(rng.choice(arg[1]), rng))
        else:
            raise AssertionError(f"regex construct {name} not covered by this sampler")
    return "".join(out)


def _sample_set(items: list, rng: random.Random) -> str:
    names = [str(op) for op, _ in items]
    if names and names[0] == "NEGATE":
        banned = {chr(arg) for op, arg in items[1:] if str(op) == "LITERAL"}
        return rng.choice([c for c in "ab c.,x9" if c not in banned])
    op, arg = rng.choice(items)
    if str(op) == "LITERAL":
        return chr(arg)
    if str(op) == "RANGE":
        return chr(rng.randint(*arg))
    if str(op) == "CATEGORY" and str(arg) == "CATEGORY_DIGIT":
        return rng.choice("0123456789")
    raise AssertionError(f"set item {op} not covered by this sampler")


@pytest.mark.parametrize("schema", list(AnswerSchema))
def test_every_answer_the_regex_admits_parses(schema: AnswerSchema) -> None:
    """Strings drawn from the regex's own parse tree (optional spaces, 1-3 digit numbers,
    1-4 objects): each one the parser reads, with the numbers the text holds. Boxes whose
    corners are not ordered are the model's mistake the regex cannot see; the parser names
    it (invalid_box) rather than failing to read the JSON."""
    regex = answer_regex(schema)
    tree = sre_parse.parse(regex)
    rng = random.Random(1)
    for _ in range(300):
        answer = _sample(tree, rng)
        assert re.fullmatch(regex, answer), answer
        parsed = parse_completion(f"<think> x </think><answer>{answer}</answer>", schema=schema)
        data = json.loads(answer)
        numbers = [
            v
            for item in (data if isinstance(data, list) else [data])
            for value in item.values()
            for v in value
        ]
        if isinstance(parsed, ParsedAnswer):
            written = [
                v for o in parsed.objects for v in (*o.box, *(c for p in o.points for c in p))
            ]
            assert written == numbers, answer
        else:
            assert parsed.reason.value == "invalid_box", (answer, parsed)


def test_the_regex_refuses_what_json_cannot_read() -> None:
    regex = completion_regex()
    good = EXAMPLE_ANSWERS[AnswerSchema.SINGLE]
    assert re.fullmatch(regex, f"<think> x </think><answer>{good}</answer>")
    for bad in (
        good.replace("[10,", "[010,"),  # a leading zero: not JSON
        good.replace("[10,", "[1000,"),  # outside the 840 frame's 3 digits
        good.replace('"bbox"', "'bbox'"),  # Seg-Zero's prompt quotes: not JSON
        good.replace("[30,110]", "[30,\xa0110]"),  # a no-break space: not JSON whitespace
    ):
        assert not re.fullmatch(regex, f"<think> x </think><answer>{bad}</answer>"), bad


def test_the_regex_follows_the_spans_of_the_mode() -> None:
    spec = spec_for("wise_f", schema="multi")
    regex = completion_regex(spec.order, spec.schema)
    answer = EXAMPLE_ANSWERS[AnswerSchema.MULTI]
    text = f"<think> two </think><answer>{answer}</answer><d_think> both mugs </d_think>"
    assert re.fullmatch(regex, text)
    assert not re.fullmatch(regex, text.split("<d_think>")[0])


# ---------------------------------------------------------------------- the forced schema


def _fill(pieces, numbers) -> str:
    values = iter(numbers)
    return "".join(str(next(values)) if p is NUMBER else p for p in pieces)


def test_the_forced_schemas_pieces_write_what_the_parser_reads() -> None:
    """Filling the forced pieces' number slots gives a completion that parses to exactly those
    numbers, in both schemas (the machine only ever appends these pieces)."""
    rng = random.Random(2)
    for _ in range(100):
        (single,) = _objects(AnswerSchema.SINGLE, rng)
        numbers = [*single.box, *(c for p in single.points for c in p)]
        text = "<think> x " + _fill(SINGLE_SEQUENCE, numbers)
        assert parse_completion(text).objects == (single,)  # type: ignore[union-attr]

        objects = _objects(AnswerSchema.MULTI, rng)
        parts = []
        for i, obj in enumerate(objects):
            parts.append(MULTI_OPEN if i == 0 else MULTI_NEXT)
            parts.append(_fill(MULTI_INSIDE, [*obj.box, *obj.points[0]]))
        text = "<think> x " + "".join(parts) + MULTI_CLOSE
        parsed = parse_completion(text, schema="multi")
        assert isinstance(parsed, ParsedAnswer) and parsed.objects == tuple(objects)
