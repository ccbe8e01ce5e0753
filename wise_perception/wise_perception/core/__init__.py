"""The WISE contract shared by the node, the CLI, the pipeline and training.

Pure Python + numpy: importing it needs no ROS, no GPU and no model library (sentence
models and tokenizers are passed in or imported lazily).
"""

from .answer import FailureReason, ObjectPrompt, ParsedAnswer, ParseFailure, parse_completion
from .geometry import POLICY_FRAME, ResizeProtocol, box_iou
from .manifest import Manifest, ManifestError, read_manifest, write_manifest
from .metrics import SegmentationScores, score_masks, token_stats
from .prompts import (
    DEFAULT_BREVITY,
    AnswerSchema,
    PromptMode,
    PromptSpec,
    build_instruction,
    build_messages,
    normalize_question,
    spec_for,
)
from .tokens import count_tokens, reasoning_tokens

__all__ = [
    "DEFAULT_BREVITY",
    "POLICY_FRAME",
    "AnswerSchema",
    "FailureReason",
    "Manifest",
    "ManifestError",
    "ObjectPrompt",
    "ParseFailure",
    "ParsedAnswer",
    "PromptMode",
    "PromptSpec",
    "ResizeProtocol",
    "SegmentationScores",
    "box_iou",
    "build_instruction",
    "build_messages",
    "count_tokens",
    "normalize_question",
    "parse_completion",
    "read_manifest",
    "reasoning_tokens",
    "score_masks",
    "spec_for",
    "token_stats",
    "write_manifest",
]
