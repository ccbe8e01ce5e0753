"""A tokenizer for the scene world: byte-level BPE as ``wise_dev.tiny_models`` builds it (Qwen's
split regex, the Qwen special tokens, the span tags as NON-special tokens, the Qwen2-VL chat
template), trained on the world's own text so that every word is one token and sequences stay
short. As in Qwen's tokenizer, every digit is its own token (``Qwen2Tokenizer`` always splits
them), so a coordinate is one to three decisions of the policy, as it is for the 7B model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from wise_dev.tiny_models import train_qwen2_tokenizer
from wise_perception.core.prompts import PromptMode, build_instruction, spec_for

VOCAB_LIMIT = 4096  # an upper bound: the corpus has far fewer distinct words


def prompt_texts(questions: Iterable[str], brevities: Sequence[str]) -> list[str]:
    """The instruction of every prompt mode for ``questions`` (the prompt contract's wording)."""
    texts = []
    for question in questions:
        for mode in PromptMode:
            for brevity in brevities if mode is PromptMode.WISE_S else ("one sentence",):
                texts.append(build_instruction(question, spec_for(mode, brevity=brevity)))
    return texts


def train_tokenizer(corpus: Iterable[str]) -> Any:
    """A ``Qwen2Tokenizer`` trained on ``corpus``."""
    return train_qwen2_tokenizer(corpus, VOCAB_LIMIT)
