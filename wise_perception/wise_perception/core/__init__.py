"""The WISE contract shared by the node, the CLI, the pipeline and training.

Prompts, answer parsing, geometry, #Tok, limits and the manifest. Training's rewards and
evaluation metrics live in ``wise_training`` (``wise_training.rewards``, ``.metrics``).

Pure Python + numpy: importing it needs no ROS, no GPU and no model library (tokenizers
are passed in).
"""

from .answer import FailureReason, ObjectPrompt, ParsedAnswer, ParseFailure, parse_completion
from .geometry import POLICY_FRAME, ResizeProtocol, box_iou
from .manifest import Manifest, ManifestError, read_manifest, write_manifest
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
    "box_iou",
    "build_instruction",
    "build_messages",
    "count_tokens",
    "normalize_question",
    "parse_completion",
    "read_manifest",
    "reasoning_tokens",
    "spec_for",
    "write_manifest",
]
