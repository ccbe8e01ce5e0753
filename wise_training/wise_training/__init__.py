"""WISE training: GRPO with the WISE rewards, evaluation and export (paper §3.2, §4)."""

__version__ = "0.1.0"
