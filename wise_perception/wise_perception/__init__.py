"""WISE perception: language-guided segmentation with concise reasoning (WISE-S + SAM2)."""

__version__ = "0.1.0"
