"""The policy backend interface: image + instruction in, completion text out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class PolicyOutput:
    text: str
    generated_tokens: int
    prefill_s: float = 0.0  # time to first token
    decode_s: float = 0.0  # the rest of generation


class PolicyUnavailable(RuntimeError):
    """The policy cannot be reached right now (e.g. its server is down); a later request may
    succeed. The pipeline answers ``policy_unavailable`` instead of ``internal_error``."""


class PolicyBackend(ABC):
    """Generates the policy's completion for a policy-frame RGB image and a user instruction."""

    @abstractmethod
    def generate(
        self, images: list[np.ndarray], instructions: list[str], *, stop: Sequence[str] = ()
    ) -> list[PolicyOutput]:
        """Batched greedy generation; ``images[i]`` is HxWx3 uint8 RGB in the policy frame.

        A completion ends at the end-of-turn token, or right after the first of the ``stop``
        strings it writes (kept in the text, nothing after it), or at the token budget.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model (and GPU memory)."""
