"""A tokenizer for the scene world: byte-level BPE as ``wise_dev.tiny_models`` builds it (Qwen's
split regex, the Qwen special tokens, the span tags as NON-special tokens, the Qwen2-VL chat
template), trained on the world's own text so that every word is one token and sequences stay
short. As in Qwen's tokenizer, every digit is its own token (``Qwen2Tokenizer`` always splits
them), so a coordinate is one to three decisions of the policy, as it is for the 7B model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from wise_dev.tiny_models import QWEN_SPLIT_REGEX, REASONING_TOKENS, SPECIAL_TOKENS, qwen2_tokenizer
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
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_LIMIT,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.to_str())
    model = state["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    tokenizer = qwen2_tokenizer(model["vocab"], merges, SPECIAL_TOKENS)
    tokenizer.add_tokens(list(REASONING_TOKENS), special_tokens=False)
    for token in SPECIAL_TOKENS:
        if tokenizer.convert_tokens_to_ids(token) != SPECIAL_TOKENS.index(token):
            raise RuntimeError(f"world tokenizer: unexpected id for {token}")
    return tokenizer
