"""Reasoning length (#Tok), the paper's efficiency metric (§4 "Datasets and Metrics").

#Tok of a completion is the number of policy-tokenizer tokens in the concise rationale's text,
without its tags and without special tokens: the released ``get_tokens.py`` encodes the
``<think>`` text that evaluation.py extracted (inner text, not stripped), with
``add_special_tokens=False``.
"""

from __future__ import annotations

from typing import Protocol

from .answer import extract_span
from .prompts import THINK


class TextTokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def count_tokens(text: str | None, tokenizer: TextTokenizer) -> int:
    """Tokens of ``text`` with the policy tokenizer; 0 for None or empty text."""
    if not text:
        return 0
    return len(tokenizer.encode(text, add_special_tokens=False))


def reasoning_tokens(completion: str, tokenizer: TextTokenizer, span: str = THINK) -> int:
    """#Tok of a completion: tokens of its ``<think>`` text (0 when there is none)."""
    return count_tokens(extract_span(completion, span, strip=False), tokenizer)
