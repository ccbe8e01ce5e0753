"""The exported checkpoint's manifest (``wise_manifest.json``): written by ``wise_training.export``,
read by the pipeline, so a WISE checkpoint folder loads with no other settings.

Reading is strict: a malformed file, a newer format version or a missing referenced file
raises :class:`ManifestError` with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .geometry import POLICY_FRAME, ResizeProtocol
from .prompts import DEFAULT_BREVITY, AnswerSchema, PromptMode

MANIFEST_NAME = "wise_manifest.json"
# 2: adds system_prompt (format 1 manifests read as before: the chat template's default).
FORMAT_VERSION = 2
DEFAULT_SEGMENTER = "facebook/sam2-hiera-large"  # paper §4: frozen SAM2-Large
# With no WISE checkpoint: the paper's base model with the wise_s prompt (§4, Table 8 row 1).
DEFAULT_POLICY = "Qwen/Qwen2.5-VL-7B-Instruct"
# The policy's token budget when neither the manifest nor the caller sets one: far above the
# paper's longest mean reasoning (Table 7: 221 tokens) plus the answer.
DEFAULT_MAX_NEW_TOKENS = 1024


class ManifestError(ValueError):
    """The checkpoint folder cannot be used as it is; the message says why."""


@dataclass(frozen=True)
class Manifest:
    prompt_mode: str = PromptMode.WISE_S.value
    brevity: str | None = DEFAULT_BREVITY
    answer_schema: str = AnswerSchema.SINGLE.value
    policy_frame: int = POLICY_FRAME
    segmenter: str = DEFAULT_SEGMENTER
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    # The system turn the policy was trained with (core.prompts.chat_messages); None: the chat
    # template's default.
    system_prompt: str | None = None
    files: tuple[str, ...] = ()
    training_config: dict[str, Any] = field(default_factory=dict)
    training_config_sha256: str = ""
    base_model: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["files"] = list(self.files)
        return json.dumps(data, indent=2, sort_keys=True)


def config_hash(config: dict[str, Any]) -> str:
    """Stable hash of a training configuration (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(manifest.to_json() + "\n", encoding="utf-8")
    return path


def has_manifest(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST_NAME).is_file()


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{path} does not exist: export the checkpoint with wise_training.export"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path} must hold a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise ManifestError(f"{path} has no integer 'format_version'")
    if version > FORMAT_VERSION:
        raise ManifestError(
            f"{path} has format version {version}, newer than this wise_perception reads "
            f"({FORMAT_VERSION}): upgrade wise_perception"
        )
    known = set(Manifest.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ManifestError(f"{path} has unknown keys {unknown}")
    try:
        data["files"] = tuple(data.get("files", ()))
        manifest = Manifest(**data)
        PromptMode(manifest.prompt_mode)
        AnswerSchema(manifest.answer_schema)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{path} is malformed: {exc}") from exc
    try:
        ResizeProtocol(manifest.policy_frame)  # the one home of the multiple-of-28 rule
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    missing = [name for name in manifest.files if not (Path(folder) / name).exists()]
    if missing:
        raise ManifestError(f"{path} lists files that are missing from {folder}: {missing}")
    return manifest
