"""Forced answer schema ("jump-forward"): append the fixed text of the answer, decode numbers.

A WISE answer is fixed JSON text around coordinates. After the model closes its rationale,
everything but the digits (and where a number shorter than ``MAX_DIGITS`` ends) is known,
so it is appended to the sequence without asking the model, several tokens in one forward.

Correctness rests on tokenization: a forced piece is only valid when the policy's tokenizer
splits the full completion exactly as [text up to the trigger] + [piece] + [digits] + ...
:meth:`AnswerGrammar.build` finds where the model's own closing of the rationale ends (the
trigger: with Qwen2.5's tokenizer the model writes ``</`` and ``think><answer>{"bbox": [`` is
forced; with a tokenizer where ``</think>`` is one token, that token) and checks the
decomposition on many sample answers; if any differs it returns None and the caller decodes
freely. A row leaves the schema (and is decoded freely from there on, exactly as without
it) as soon as the model picks a token that the schema does not allow, so the completion
text equals free decoding's whenever the model follows the schema.

The pieces are the answer schema's template (core.answer_schema) between the closing of the
rationale and ``</answer>``; for the single-object schema (released WISE answers)::

    </think><answer>{"bbox": [N,N,N,N], "points_1": [N,N], "points_2": [N,N]}</answer>

and for the multi-object schema (VisionReasoner; offered when the request's prompt spec asks
for it, next to the single one, which the parser also accepts)::

    </think><answer>[{"bbox_2d": [N,N,N,N], "point_2d": [N,N]}, {...}]</answer>
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...core.answer_schema import (
    LIST_CLOSE,
    LIST_OPEN,
    OBJECT_SEPARATOR,
    AnswerSchema,
    answer_template,
    format_answer,
    merge_literals,
)
from ...core.prompts import ANSWER, THINK, PromptSpec

LOG = logging.getLogger(__name__)

# Coordinates are in the 840x840 policy frame (core.geometry.POLICY_FRAME): at most 3 digits,
# so after a third digit the separator is forced without asking the model.
MAX_DIGITS = 3
CLOSE_THINK = f"</{THINK}>"
OPEN_ANSWER = f"<{ANSWER}>"
STOP = f"</{ANSWER}>"

_SINGLE_OBJECT = answer_template(AnswerSchema.SINGLE).object
SINGLE_SEQUENCE: tuple[str | None, ...] = merge_literals(
    (CLOSE_THINK, OPEN_ANSWER, *_SINGLE_OBJECT, STOP)
)
# A multi-object answer: the opening, one object's inside, then the next object or the close.
_MULTI_OBJECT = answer_template(AnswerSchema.MULTI).object
MULTI_OPEN = CLOSE_THINK + OPEN_ANSWER + LIST_OPEN + str(_MULTI_OBJECT[0])
MULTI_INSIDE: tuple[str | None, ...] = _MULTI_OBJECT[1:-1]
MULTI_NEXT = str(_MULTI_OBJECT[-1]) + OBJECT_SEPARATOR + str(_MULTI_OBJECT[0])
MULTI_CLOSE = str(_MULTI_OBJECT[-1]) + LIST_CLOSE + STOP

END = -1


@dataclass(frozen=True)
class Alternative:
    ids: tuple[int, ...]
    next: int  # node index, or END


@dataclass(frozen=True)
class Node:
    """A literal node (``alternatives``) or a number (``alternatives`` empty, ``next`` set)."""

    alternatives: tuple[Alternative, ...] = ()
    next: int = END

    @property
    def is_number(self) -> bool:
        return not self.alternatives


def schema_options(spec: PromptSpec | None, stop: Sequence[str]) -> tuple[bool, bool]:
    """(forcing allowed, multi-object schema offered) for a request's prompt spec.

    Forcing assumes the answer directly follows the rationale and ends the completion (the
    spec's order ends with think, answer, and generation stops at ``</answer>``); modes that
    put ``<d_think>`` between them or after the answer decode freely."""
    if spec is None or STOP not in stop:
        return False, False
    return tuple(spec.order[-2:]) == (THINK, ANSWER), spec.schema is AnswerSchema.MULTI


class AnswerGrammar:
    """The schema as token pieces of one tokenizer, verified (see the module docstring)."""

    def __init__(self, tokenizer: Any, trigger: str, nodes: list[Node], opens: dict[str, int]):
        self.tokenizer = tokenizer
        self.trigger = trigger
        self.nodes = nodes
        self.opens = opens  # "single"/"multi" -> node index of the opening piece
        self._digit_cache: dict[int, int] = {}
        self.longest_piece = max(len(a.ids) for n in nodes for a in n.alternatives)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, tokenizer: Any, *, samples: int = 200) -> AnswerGrammar | None:
        """The verified grammar, or None (with the reason logged) when the tokenizer does not
        split the answer at the pieces' boundaries."""
        trigger = _find_trigger(tokenizer)
        if trigger is None:
            LOG.warning("forced schema off: no token boundary inside %r", CLOSE_THINK)
            return None

        def enc(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text, add_special_tokens=False))

        rest = len(trigger)
        nodes: list[Node] = []
        # Single-object chain: node i is followed by node i + 1; the last piece ends it.
        single = SINGLE_SEQUENCE[1:]
        for i, piece in enumerate(single):
            nxt = i + 1 if i + 1 < len(single) else END
            nodes.append(
                Node(next=nxt) if piece is None else Node((Alternative(enc(piece), nxt),), nxt)
            )
        single_first = 0
        # Multi-object chain: 4 box numbers, point piece, 2 numbers, then next object or close.
        m = len(nodes)
        for i, piece in enumerate(MULTI_INSIDE):
            nxt = m + i + 1
            if piece is None:
                nodes.append(Node(next=nxt))
            else:
                nodes.append(Node((Alternative(enc(piece), nxt),), nxt))
        nodes.append(Node((Alternative(enc(MULTI_NEXT), m), Alternative(enc(MULTI_CLOSE), END))))
        opens_single = Node((Alternative(enc(SINGLE_SEQUENCE[0][rest:]), single_first),))
        opens_both = Node(
            (
                Alternative(enc(SINGLE_SEQUENCE[0][rest:]), single_first),
                Alternative(enc(MULTI_OPEN[rest:]), m),
            )
        )
        nodes.append(opens_single)
        nodes.append(opens_both)
        grammar = cls(tokenizer, trigger, nodes, {"single": len(nodes) - 2, "both": len(nodes) - 1})
        problem = grammar._verify(samples)
        if problem:
            LOG.warning("forced schema off: %s", problem)
            return None
        return grammar

    def _verify(self, samples: int) -> str:
        """'' when every sample answer tokenizes as the forced pieces plus the digits."""
        for node in self.nodes:
            alts = node.alternatives
            for a in alts:
                if not a.ids:
                    return "an empty piece"
                for b in alts:
                    if a is not b and b.ids[: len(a.ids)] == a.ids:
                        return "one piece is a prefix of another"
        rng = random.Random(0)
        thinks = [" the red cup is on the left ", " cup", " two boxes.", " 3 ", "x"]
        for i in range(samples):
            multi = i % 2 == 1
            think = "<think>" + thinks[i % len(thinks)]
            first = rng.choice((rng.randint(0, 9), rng.randint(10, 99), rng.randint(100, 839)))
            if multi:
                objects = []
                for _ in range(1 + i % 3):
                    n = [rng.randint(0, 839) for _ in range(6)]
                    objects.append((n[:4], [n[4:]]))
                answer = OPEN_ANSWER + format_answer(objects, AnswerSchema.MULTI) + STOP
            else:
                n = [first, *(rng.randint(0, 839) for _ in range(7))]
                single = [(n[:4], [n[4:6], n[6:]])]
                answer = OPEN_ANSWER + format_answer(single, AnswerSchema.SINGLE) + STOP
            full = think + CLOSE_THINK + answer
            canonical = self.tokenizer.encode(full, add_special_tokens=False)
            # Replay: the model's decisions are the canonical tokens; forced ones must match.
            machine = RowMachine(self, allow_multi=multi)
            produced: list[int] = []
            position = 0
            while position < len(canonical) and not machine.finished:
                token = canonical[position]
                produced.append(token)
                position += 1
                text = self.tokenizer.decode(produced, skip_special_tokens=True)
                forced = machine.feed(token, text)
                if machine.left:
                    return f"sample {full!r}: the schema rejects token {position - 1}"
                produced.extend(forced)
                position += len(forced)
                if produced != canonical[: len(produced)]:
                    return f"sample {full!r} tokenizes differently from the forced pieces"
            if produced != canonical or not machine.finished:
                return f"sample {full!r}: replay gave {len(produced)} of {len(canonical)} tokens"
        return ""

    # ------------------------------------------------------------------ queries

    def digits_of(self, token: int) -> int:
        """Number of decimal digits a token writes, 0 if it is not made of digits only."""
        if token not in self._digit_cache:
            text = self.tokenizer.decode([token], skip_special_tokens=True)
            self._digit_cache[token] = (
                len(text) if text and text.isascii() and text.isdigit() else 0
            )
        return self._digit_cache[token]


def _find_trigger(tokenizer: Any) -> str | None:
    """The part of ``</think>`` the model writes itself before the rest can be forced: the end
    of the first token that holds the tag's start, the same for several rationale endings."""
    found = set()
    for think in (" the red cup is on the left ", " left", " left.", " 3 "):
        prefix = "<think>" + think
        answer = format_answer([((1, 2, 3, 4), ((5, 6), (7, 8)))], AnswerSchema.SINGLE)
        full = prefix + CLOSE_THINK + OPEN_ANSWER + answer
        ids = tokenizer.encode(full, add_special_tokens=False)
        for end in range(1, len(ids) + 1):
            text = tokenizer.decode(ids[:end], skip_special_tokens=True)
            if len(text) > len(prefix):
                covered = text[len(prefix) :]
                if not CLOSE_THINK.startswith(covered):
                    return None  # the token runs past the tag: nothing can be forced there
                found.add(covered)
                break
    return found.pop() if len(found) == 1 else None


class RowMachine:
    """One row's position in the schema. ``feed(token, text)`` after each decided token
    returns the tokens to force after it; ``left`` once the model left the schema,
    ``finished`` once the last piece (ending with ``</answer>``) was forced."""

    def __init__(self, grammar: AnswerGrammar, *, allow_multi: bool) -> None:
        self.grammar = grammar
        self.open = grammar.opens["both" if allow_multi else "single"]
        self.active = False
        self.left = False
        self.finished = False
        self.node = END
        self.digits = 0
        self.live: list[tuple[Alternative, int]] = []

    def feed(self, token: int, text: str) -> list[int]:
        if self.left or self.finished:
            return []
        if not self.active:
            trigger = self.grammar.trigger
            head = text[: len(text) - len(trigger)]
            if text.endswith(trigger) and "<think>" in head and CLOSE_THINK not in head:
                self.active = True
                return self._enter(self.open)
            return []
        node = self.grammar.nodes[self.node]
        if node.is_number:
            digits = self.grammar.digits_of(token)
            if digits and self.digits + digits <= MAX_DIGITS:
                self.digits += digits
                if self.digits == MAX_DIGITS:
                    return self._enter(node.next)
                return []
            if self.digits == 0:
                self.left = True  # a number must start with a digit
                return []
            self._start(node.next)
        return self._decided(token)

    # -------------------------------------------------------------- internals

    def _start(self, index: int) -> None:
        self.node = index
        self.live = [(a, 0) for a in self.grammar.nodes[index].alternatives]

    def _enter(self, index: int) -> list[int]:
        if index == END:
            self.finished = True
            return []
        node = self.grammar.nodes[index]
        if node.is_number:
            self.node, self.digits = index, 0
            return []
        self._start(index)
        return self._force()

    def _decided(self, token: int) -> list[int]:
        live = [(a, used + 1) for a, used in self.live if a.ids[used] == token]
        if not live:
            self.left = True
            return []
        self.live = live
        return self._force()

    def _force(self) -> list[int]:
        forced: list[int] = []
        while True:
            if len(self.live) == 1:
                alternative, used = self.live[0]
                forced.extend(alternative.ids[used:])
                nxt = alternative.next
                if nxt == END:
                    self.finished = True
                    return forced
                if self.grammar.nodes[nxt].is_number:
                    self.node, self.digits = nxt, 0
                    return forced
                self._start(nxt)
                continue
            # Several alternatives: force their common next token, if they share one.
            nexts = {a.ids[used] for a, used in self.live}
            if len(nexts) != 1:
                return forced
            token = nexts.pop()
            forced.append(token)
            self.live = [(a, used + 1) for a, used in self.live]


def forward_passes(
    grammar: AnswerGrammar | None,
    tokenizer: Any,
    completion: str,
    schema: AnswerSchema | str = AnswerSchema.SINGLE,
) -> int:
    """Sequential forward passes needed to generate ``completion`` (ids of the policy's
    tokenizer, ending at ``</answer>``) asked in ``schema``: one per token the model decides,
    prefill included. With ``grammar=None``, free decoding: one per token."""
    ids = tokenizer.encode(completion, add_special_tokens=False)
    if grammar is None:
        return len(ids)
    machine = RowMachine(grammar, allow_multi=AnswerSchema(schema) is AnswerSchema.MULTI)
    produced: list[int] = []
    passes = 0
    while len(produced) < len(ids) and not machine.finished:
        token = ids[len(produced)]
        passes += 1
        produced.append(token)
        forced = machine.feed(token, tokenizer.decode(produced, skip_special_tokens=True))
        produced.extend(forced)
    return passes


def pieces_round_trip(grammar: AnswerGrammar) -> Sequence[str]:
    """Decoded text of every forced piece (tests check it against the schema text)."""
    return [
        grammar.tokenizer.decode(list(a.ids), skip_special_tokens=True)
        for node in grammar.nodes
        for a in node.alternatives
    ]
