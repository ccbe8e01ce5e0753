"""Comparing greedy decodes the way their meaning demands, on any CPU and thread count.

Two numerically equivalent computations (one prompt alone vs. left-padded in a batch; the
engine vs. ``model.generate``) give float32 logits that differ by ~1e-6. Their greedy tokens
are then equal, except where the reference's best two logits are a genuine tie: from that step
on either continuation is right, so the comparison stops there. Anything else is a real bug.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# A top-1/top-2 gap this small (relative to the logits' size) is a tie for float32 arithmetic.
TIE_RELATIVE = 1e-4


def is_tie(step_logits: torch.Tensor) -> bool:
    top2 = torch.topk(step_logits.float(), 2).values
    return float(top2[0] - top2[1]) <= TIE_RELATIVE * max(1.0, float(top2.abs().max()))


def assert_same_greedy(
    reference: Sequence[int],
    reference_logits: Sequence[torch.Tensor],
    other: Sequence[int],
    *,
    what: str = "",
) -> None:
    """``other`` equals ``reference`` token for token (both cut at the same end), or they part
    only at a step where ``reference_logits[step]`` is a tie."""
    for step, (want, got) in enumerate(zip(reference, other, strict=False)):
        if want != got:
            assert is_tie(reference_logits[step]), (
                f"{what}: greedy tokens differ at step {step} ({want} vs {got}) where the "
                f"reference's choice was not a tie: {list(reference)} vs {list(other)}"
            )
            return
    assert len(reference) == len(other), f"{what}: {list(reference)} vs {list(other)}"


def greedy_rows(out: object, prompt_length: int, eos_ids: set[int]) -> list[list[int]]:
    """The generated ids of each row of ``generate(..., return_dict_in_generate=True)``, up to
    and including its first end-of-turn token (what follows is padding)."""
    rows = []
    for row in out.sequences[:, prompt_length:].tolist():  # type: ignore[attr-defined]
        end = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
        rows.append(row[:end])
    return rows
