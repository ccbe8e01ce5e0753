"""The policy backend interface: image + instruction in, completion text out.

What the pipeline uses of a backend, and nothing else: :meth:`PolicyBackend.generate`, the
policy's ``tokenizer`` for #Tok, :meth:`PolicyBackend.info` and :meth:`PolicyBackend.close`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend_info import BackendInfo
from ..core.prompts import PromptSpec
from ..core.tokens import TextTokenizer


@dataclass
class PolicyOutput:
    text: str
    generated_tokens: int
    prefill_s: float = 0.0  # time to first token
    decode_s: float = 0.0  # the rest of generation
    # Sequential forward passes this completion took, prefill included (fewer than its tokens
    # with the forced answer schema); 0 where the backend cannot tell (vLLM).
    forward_passes: int = 0


class PolicyUnavailable(RuntimeError):
    """The policy cannot be reached right now (e.g. its server is down); a later request may
    succeed. The pipeline answers ``policy_unavailable`` instead of ``internal_error``."""


class PolicyBackend(ABC):
    """Generates the policy's completion for a policy-frame RGB image and a user instruction."""

    #: The policy's tokenizer (``encode(text, add_special_tokens=False)``), for #Tok
    #: (core.tokens); None where it is not known (then #Tok is not counted).
    tokenizer: TextTokenizer | None = None

    @abstractmethod
    def generate(
        self,
        images: list[np.ndarray],
        instructions: list[str],
        *,
        spec: PromptSpec | None = None,
        stop: Sequence[str] = (),
    ) -> list[PolicyOutput]:
        """Batched greedy generation; ``images[i]`` is HxWx3 uint8 RGB in the policy frame.

        ``spec``: the prompt spec the instructions were rendered with (its span order and
        answer schema): a backend may use it to write the answer faster or constrain it (the
        forced answer schema, vLLM's structured outputs); None: nothing is assumed. A
        completion ends at the end-of-turn token, or right after the first of the ``stop``
        strings it writes (kept in the text, nothing after it), or at the token budget.
        """

    @abstractmethod
    def info(self) -> BackendInfo:
        """What was loaded (name, backend, device, dtype); never does I/O, never raises."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model (and GPU memory)."""
