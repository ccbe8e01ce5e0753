"""Token choosers and greedy-run comparison for the benchmark and the engine tests.

The product decodes greedily; its engines take the token choice as a function
(``wise_perception.policy.transformers.engine.TokenChooser``). Here are the choices only
development needs: teacher forcing (:func:`scripted`: random weights write a given
completion, every forward still run in full), a minimum length (:func:`at_least`, as
``generate``'s ``min_new_tokens``), and :func:`rows_agree`, which compares two greedy runs the
way float arithmetic allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from wise_perception.policy.transformers.engine import TokenChooser


def scripted(script: Sequence[int], end: int) -> TokenChooser:
    """Teacher forcing: every row takes ``script[position]`` (``end`` after the script)
    instead of its argmax. The time and the forward passes are those of generating that text:
    the benchmark times a given completion on random weights this way, which would otherwise
    write junk and leave the answer schema. The script goes to the device once (per device
    and batch size), so a step adds no host sync."""
    import torch

    table = [*script, end]
    tables: dict[tuple[str, int], Any] = {}

    def choose(logits: Any, positions: Any) -> Any:
        key = (str(logits.device), int(logits.shape[0]))
        rows = tables.get(key)
        if rows is None:
            row = torch.tensor(table, dtype=torch.long, device=logits.device)
            rows = tables[key] = row[None].expand(logits.shape[0], -1)
        index = positions.clamp(max=len(table) - 1)[:, None]
        return rows.gather(1, index)[:, 0]

    return choose


def at_least(min_tokens: int, eos_ids: Iterable[int]) -> TokenChooser:
    """Greedy with the end-of-turn tokens barred before position ``min_tokens`` (what
    ``generate``'s ``min_new_tokens`` does), so random weights generate a given length."""
    import torch

    ends = sorted(eos_ids)

    def choose(logits: Any, positions: Any) -> Any:
        early = (positions < min_tokens)[:, None]
        barred = torch.zeros_like(logits, dtype=torch.bool)
        barred[:, ends] = True
        return logits.masked_fill(early & barred, float("-inf")).argmax(-1)

    return choose


def rows_agree(
    reference: Sequence[Sequence[int]],
    candidate: Sequence[Sequence[int]],
    margins: Sequence[Sequence[float]] | None,
    *,
    rel_tol: float = 1e-4,
) -> tuple[bool, str]:
    """Whether two greedy runs agree: equal ids, or a first divergence where the reference's
    top-1/top-2 logit margin was below ``rel_tol`` (relative to the top logit's magnitude,
    floor 1): a genuine tie, after which nothing more can be compared. ``margins[b][i]`` is the
    reference's margin when it chose ``reference[b][i]``."""
    for b, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        if list(ref) == list(cand):
            continue
        at = next(
            (i for i, (x, y) in enumerate(zip(ref, cand, strict=False)) if x != y),
            min(len(ref), len(cand)),
        )
        if margins is not None and at < min(len(ref), len(cand)) and margins[b][at] <= rel_tol:
            continue
        return False, f"row {b}: first difference at token {at}: {list(ref)} vs {list(cand)}"
    return True, ""
