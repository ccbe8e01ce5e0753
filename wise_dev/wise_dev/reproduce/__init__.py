"""The paper's effect reproduced end to end at CPU scale (``make reproduce``): a synthetic scene
world, a stand-in base policy trained here (SFT), a tiny SAM2, GRPO with the shipped configs,
one evaluation with every row. A development tool: the products never import it."""

from __future__ import annotations


def help_text(doc: str | None) -> str:
    """A module docstring as ``--help`` shows it: plain text, without reST's literal quotes."""
    return (doc or "").replace("``", "")
