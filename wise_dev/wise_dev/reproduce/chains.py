"""Procedurally written reasoning chains for the scene world: the stand-in's SFT targets.

No Qwen2.5-VL-7B-Instruct exists offline, so the base policy is trained here from random weights
on chains written from each scene's ground truth (``wise_training.scenes`` records), in the
style of Seg-Zero's rationales: restate the question, enumerate the objects, check the
condition, conclude. A chain is written at a *verbosity* (:class:`Verbosity`): each step is
included with a probability, so chain lengths vary naturally, as an instruct model's do. This
matters for what the reproduction can show: GRPO only moves the length of ``<think>`` if shorter
rationales have some probability under sampling (temperature 1), and here they do, because the
written chains vary. Nothing in the data pairs a short ``<think>`` with a long ``<d_think>`` more
than chance does: that pairing is what WISE's reward must find.

Besides the chains, every scene gives a *grounding* example: a short request naming the scene's
objects, answered with each one's box. It stands in for the grounding data an instruct model is
pre-trained on (Qwen2.5-VL's includes boxes in its own coordinates): the reasoning chains alone
give one box per image, too little to learn from random weights on a CPU budget where things
are, and the short prompt makes it cheap.

Three verbosities: ``SEG_ZERO`` (the Seg-Zero-length chains of the ``seg_zero`` prompt and the
``<think>`` of the ``wise_train`` prompt), ``DETAILED`` (``<d_think>``: every step, always), and
``BRIEF`` (the chains written after a brevity instruction: the 7B instruct model follows "one
sentence" only modestly, Seg-Zero-S's 58 tokens against 112 in the paper's Table 8, so the stand-in
is taught about half the length, not one sentence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wise_perception.core.prompts import PromptMode, build_messages, chat_messages, spec_for


@dataclass(frozen=True)
class Verbosity:
    """Probability of each step of a chain (the conclusion is always written)."""

    restate: float
    filler: float
    enumerate: float
    full_list: float  # when enumerating: every object (else the target and one or two others)
    sizes: float  # describe sizes when enumerating
    reason: float
    verify: float  # a closing check of the answer against the question


SEG_ZERO = Verbosity(0.8, 0.35, 0.8, 0.75, 0.5, 0.9, 0.4)
BRIEF = Verbosity(0.3, 0.05, 0.3, 0.3, 0.2, 0.55, 0.05)
DETAILED = Verbosity(1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0)

# Brevity instructions the stand-in is taught to follow modestly (§3.3's is "one sentence").
BREVITY_PHRASES: tuple[str, ...] = ("one sentence", "briefly", "in short", "a few words")

_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def where(obj: dict[str, Any]) -> str:
    """``at the top left``, ``on the right``, ``in the centre``."""
    position = obj["position"]
    if position == "centre":
        return "in the centre"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def _size_word(obj: dict[str, Any]) -> str:
    return obj["size_word"]


def name(obj: dict[str, Any], objects: Sequence[dict[str, Any]] = ()) -> str:
    """``red circle``; ``red circle at the top`` when another object of ``objects`` shares it."""
    plain = f"{obj['colour']} {obj['shape']}"
    twins = [o for o in objects if f"{o['colour']} {o['shape']}" == plain]
    return f"{plain} {where(obj)}" if len(twins) > 1 else plain


def describe(obj: dict[str, Any], *, size: bool, article: str = "a") -> str:
    words = [article] + ([_size_word(obj)] if size else []) + [name(obj), where(obj)]
    return " ".join(words)


def _listing(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _runner_up(values: Sequence[float], best: int) -> int:
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)
    return order[1] if order[0] == best else order[0]


def reason(record: dict[str, Any], rng: np.random.Generator) -> str:
    """The step that checks the instruction's condition, for the scene's ground truth."""
    objects, t = record["objects"], record["target"]
    target = objects[t]
    family, detail = record["family"], record.get("detail") or {}
    ref = objects[record["reference"]] if record.get("reference") is not None else None
    if family in ("colour_shape", "colour_shape_unseen"):
        return f"Only one object is a {name(target, objects)}."
    if family == "shape_only":
        others = sorted({o["shape"] for o in objects} - {target["shape"]})
        return (
            f"Only one object is a {target['shape']}; the others are "
            f"{_listing([_PLURAL[s] for s in others])}."
        )
    if family == "colour_only":
        return f"Only one object is {target['colour']}: the {name(target, objects)}."
    if family == "extreme_position":
        word = detail["word"]
        axis, sign = {"leftmost": (0, -1), "rightmost": (0, 1), "topmost": (1, -1)}.get(
            word, (1, 1)
        )
        runner = objects[_runner_up([sign * o["centre"][axis] for o in objects], t)]
        direction = {"leftmost": "further left", "rightmost": "further right"}.get(
            word, "higher" if word == "topmost" else "lower"
        )
        return f"The {name(target, objects)} is {direction} than every other object, even the {name(runner, objects)}."
    if family in ("extreme_size", "second_largest", "size_within", "size_within_unseen"):
        among = detail.get("among", list(range(len(objects))))
        areas = [objects[i]["area"] for i in among]
        ranked = [among[i] for i in sorted(range(len(among)), key=lambda k: -areas[k])]
        if family == "second_largest":
            return (
                f"The largest object is the {name(objects[ranked[0]], objects)}. The next in size is the "
                f"{name(target, objects)}, larger than the rest."
            )
        word = detail["word"]
        runner = ranked[1] if word == "largest" else ranked[-2]
        compare = "bigger" if word == "largest" else "smaller"
        head = "Comparing sizes"
        if family.startswith("size_within"):
            kind, value = detail["kind"], detail["value"]
            group = _PLURAL[value] if kind == "shape" else f"{value} objects"
            head = f"There are {len(among)} {group}"
        return (
            f"{head}, the {name(target, objects)} is the {word}, {compare} than the "
            f"{name(objects[runner], objects)}."
        )
    if family in ("closest_to", "farthest_from", "colour_closest"):
        among = detail.get("among") or [i for i in range(len(objects)) if objects[i] is not ref]
        dist = [math.dist(objects[i]["centre"], ref["centre"]) for i in among]
        closest = family != "farthest_from"
        order = sorted(range(len(among)), key=lambda k: dist[k], reverse=not closest)
        runner = objects[among[order[1]]]
        relation = "nearest to it" if closest else "the farthest from it"
        other = "farther away" if closest else "closer"
        return (
            f"The {name(ref, objects)} is {where(ref)}. The {name(target, objects)} is {relation}, while the "
            f"{name(runner, objects)} is {other}."
        )
    if family in ("same_colour", "same_colour_paraphrase"):
        return (
            f"The {ref['shape']} is {ref['colour']}. The other {ref['colour']} object is the "
            f"{name(target, objects)}, which is a {target['shape']}."
        )
    if family == "same_shape":
        return (
            f"The {name(ref, objects)} is a {ref['shape']}. The other {ref['shape']} is "
            f"{target['colour']}, a different colour."
        )
    raise ValueError(f"no reasoning step for family {family!r}")


def write_chain(record: dict[str, Any], verbosity: Verbosity, rng: np.random.Generator) -> str:
    """A rationale for the record's instruction, at ``verbosity``."""
    objects, target = record["objects"], record["objects"][record["target"]]
    question = record["instruction"]
    parts: list[str] = []
    if rng.random() < verbosity.restate:
        parts.append(
            _pick(
                rng,
                (
                    f"The question asks for {question}.",
                    f"I need to find {question}.",
                    f"The instruction describes {question}.",
                    f"I am asked to segment {question}.",
                ),
            )
        )
    if rng.random() < verbosity.filler:
        parts.append(
            _pick(
                rng,
                (
                    "Let me look at the image carefully.",
                    "I compare the objects in the image one by one.",
                    "First I look at every shape in the picture.",
                ),
            )
        )
    if rng.random() < verbosity.enumerate:
        sizes = rng.random() < verbosity.sizes
        if rng.random() < verbosity.full_list:
            chosen = list(range(len(objects)))
            head = _pick(rng, (f"The image shows {len(objects)} objects:", "I can see"))
        else:
            others = [i for i in range(len(objects)) if i != record["target"]]
            k = int(rng.integers(1, min(2, len(others)) + 1))
            chosen = sorted([record["target"], *rng.choice(others, size=k, replace=False)])
            head = "Among the objects are"
        if rng.random() < 0.5:
            chosen.sort(key=lambda i: objects[i]["centre"][0])
        parts.append(f"{head} {_listing([describe(objects[i], size=sizes) for i in chosen])}.")
    if rng.random() < verbosity.reason:
        parts.append(reason(record, rng))
    parts.append(
        _pick(
            rng,
            (
                f"So the target is the {name(target)} {where(target)}.",
                f"Therefore the answer is the {name(target)} {where(target)}.",
                f"The matching object is the {name(target)} {where(target)}.",
            ),
        )
    )
    if rng.random() < verbosity.verify:
        parts.append(
            _pick(
                rng,
                (
                    f"It is the only object that fits {question}.",
                    "No other object satisfies the instruction.",
                ),
            )
        )
    return " ".join(parts)


def answer_json(record: dict[str, Any]) -> str:
    """The answer span's JSON in the single-object schema (policy frame = image pixels here)."""
    x1, y1, x2, y2 = (round(v) for v in record["box"])
    (a, b), (c, d) = ([round(v) for v in p] for p in record["points"])
    # The layout of the prompt contract's example answer (core.prompts.EXAMPLE_ANSWERS).
    return f'{{"bbox": [{x1},{y1},{x2},{y2}], "points_1": [{a},{b}], "points_2": [{c},{d}]}}'


def completion(record: dict[str, Any], mode: str, rng: np.random.Generator) -> str:
    """What the stand-in is taught to answer ``record`` in prompt ``mode``."""
    answer = f"<answer>{answer_json(record)}</answer>"
    if mode == PromptMode.WISE_TRAIN.value:
        think = write_chain(record, SEG_ZERO, rng)
        detailed = write_chain(record, DETAILED, rng)
        return f"<think> {think} </think>{answer}<d_think> {detailed} </d_think>"
    verbosity = BRIEF if mode == PromptMode.WISE_S.value else SEG_ZERO
    return f"<think> {write_chain(record, verbosity, rng)} </think>{answer}"


# Mixture of the SFT set: the two prompts the issue names, and the brevity-instructed prompt.
SFT_MODES: tuple[tuple[str, float], ...] = (
    (PromptMode.SEG_ZERO.value, 0.4),
    (PromptMode.WISE_TRAIN.value, 0.4),
    (PromptMode.WISE_S.value, 0.2),
)


def sft_example(
    record: dict[str, Any], rng: np.random.Generator, system: str | None
) -> dict[str, Any]:
    """One conversational prompt-completion example (TRL's format), without its image."""
    modes, weights = zip(*SFT_MODES, strict=True)
    mode = modes[int(rng.choice(len(modes), p=np.array(weights) / sum(weights)))]
    brevity = _pick(rng, BREVITY_PHRASES)
    spec = spec_for(mode, brevity=brevity)
    return {
        "prompt": build_messages(record["instruction"], spec, system=system),
        "completion": [{"role": "assistant", "content": completion(record, mode, rng)}],
        "mode": mode,
    }


GROUNDING_REQUEST = "Give the bbox of each object:"


def grounding_item(obj: dict[str, Any]) -> str:
    """One object of a grounding answer: ``red circle [x1,y1,x2,y2]``."""
    return f"{name(obj)} [{','.join(str(v) for v in obj['box'])}]"


def grounding_example(
    record: dict[str, Any], system: str | None, rng: np.random.Generator
) -> dict[str, Any]:
    """Where each object is: the request names the objects (those a colour and a shape name
    alone, in a random order; only ``record["ask"]`` when the record names one) and the answer
    gives each one's box, in the request's order."""
    objects = record["objects"]
    names = [f"{o['colour']} {o['shape']}" for o in objects]
    unique = [o for o, n in zip(objects, names, strict=True) if names.count(n) == 1]
    if record.get("ask") is not None:
        unique = [o for o in unique if o is objects[record["ask"]]]
    order = [unique[int(i)] for i in rng.permutation(len(unique))]
    request = f"{GROUNDING_REQUEST} {', '.join(name(o) for o in order)}."
    items = [grounding_item(o) for o in order]
    return {
        "prompt": chat_messages(request, system=system),
        "completion": [{"role": "assistant", "content": "; ".join(items) + "."}],
        "mode": "grounding",
    }
