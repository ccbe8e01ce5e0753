"""Input bounds shared by every boundary (node, CLI, pipeline): one number for each limit.

The node validates a message once with these functions and hands the same limits to the
pipeline, so a command or image accepted at one boundary is never rejected by the next; what
it checked travels as a :class:`CheckedImage` (and a ``prompts.Question``), so the next
boundary on the same path does not check it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# A robot's instruction is a sentence, not a document (the released prompts quote it whole).
MAX_COMMAND_CHARS = 1000
# 4096 x 4096: every camera a robot carries (4K UHD is 8.3 MP), far below memory trouble.
# 0 means "no limit" where a caller passes its own value (node parameter, CLI option).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
# What a result echoes of the command it answers: enough to recognise it, never a megabyte.
ECHO_CHARS = 200
# What a result carries of the policy's raw completion (a 1024-token completion is ~5 k chars).
COMPLETION_ECHO_CHARS = 4000


def image_size_problem(width: int, height: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """Why an image of this size cannot be served ("" when it can). ``max_pixels`` 0: no limit."""
    if width <= 0 or height <= 0:
        return f"image has zero size ({width}x{height})"
    if max_pixels > 0 and width * height > max_pixels:
        return (
            f"image of {width}x{height} = {width * height} pixels exceeds "
            f"max_image_pixels={max_pixels}"
        )
    return ""


@dataclass(frozen=True)
class CheckedImage:
    """An HxWx3 uint8 RGB image checked once, where it came in (the node at receipt, the CLI
    on reading it), against ``max_pixels`` (0: no limit). The pipeline serves it without
    checking it again when that limit is no looser than its own."""

    pixels: np.ndarray
    max_pixels: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    def within(self, max_pixels: int) -> bool:
        """Whether the check it passed covers a limit of ``max_pixels`` (0: no limit)."""
        return max_pixels == 0 or 0 < self.max_pixels <= max_pixels


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"
