"""Export a trained policy as the folder the pipeline and the ROS node load with no other settings.

``python -m wise_training.export --checkpoint outputs/wise/final --out models/wise-7b-s``
writes into ``--out``:

- the policy weights as safetensors (as trained, or cast with ``--dtype``): the checkpoint is
  loaded with its own Hugging Face class
  (``config.architectures``, built into transformers; remote code is never trusted) and saved
  with ``save_pretrained``; pickle-only checkpoints are accepted only when every ``.bin`` file
  loads with ``torch.load(weights_only=True)``;
- the processor (``AutoProcessor``; a bare tokenizer is refused — the pipeline needs the image
  processor and chat template too): from the checkpoint, else from ``--processor`` or the base
  model, keeping the checkpoint's tokenizer;
- ``wise_training_config.json`` (the resolved training configuration) and ``wise_manifest.json``
  (via ``wise_perception.core.manifest``): inference mode (default ``wise_s``), brevity, answer
  schema, policy frame (840), the SAM2 model to pair with, ``max_new_tokens``, the training
  configuration and its sha256 (``config_hash``), the base model and every file written.

The export is built in a temporary sibling folder, checked by reading the manifest back
(``read_manifest``), then moved into place. Exit code 2 for unusable input (missing folder, no
weights, untrusted pickle, no processor, existing output without ``--force``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wise_perception.core.geometry import POLICY_FRAME, ResizeProtocol
from wise_perception.core.manifest import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SEGMENTER,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    config_hash,
    read_manifest,
    write_manifest,
)
from wise_perception.core.prompts import DEFAULT_BREVITY, AnswerSchema, PromptMode, spec_for
from wise_perception.policy.loader import CheckpointError, find_weights, load_model

from .config import TRAINING_CONFIG_NAME
from .processor import load_processor

LOG = logging.getLogger("wise_training.export")
# Weights as trained ("auto"), or cast: bfloat16 halves a float32-trained policy on disk.
EXPORT_DTYPES = ("auto", "bfloat16", "float16", "float32")
# Keys a training configuration may use for the model it started from (first found wins).
BASE_MODEL_KEYS = ("base_model", "model_name_or_path", "model_id", "model", "policy")


class ExportError(RuntimeError):
    """The checkpoint cannot be exported as it is; the message says why."""


# --------------------------------------------------------------------------- checks


def check_checkpoint(checkpoint: Path) -> None:
    if not checkpoint.exists():
        raise ExportError(f"checkpoint folder {checkpoint} does not exist")
    if not checkpoint.is_dir():
        raise ExportError(f"checkpoint {checkpoint} is not a folder")
    if not (checkpoint / "config.json").is_file():
        raise ExportError(f"{checkpoint} has no config.json: not a Hugging Face model folder")
    if find_weights(checkpoint) == ([], []):
        raise ExportError(
            f"{checkpoint} holds no weights (*.safetensors or pytorch_model*.bin); "
            "point --checkpoint at the training's output_dir/final or a checkpoint-N folder"
        )


def _read_config_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a mapping (the resolved training configuration)")
    return data


def resolve_training_config(checkpoint: Path, fallback: Path | None) -> tuple[dict[str, Any], str]:
    """The training configuration and where it came from (checkpoint's file, then ``fallback``)."""
    own = checkpoint / TRAINING_CONFIG_NAME
    try:
        if own.is_file():
            if fallback is not None:
                LOG.warning("using %s; --training-config %s is ignored", own, fallback)
            return _read_config_file(own), str(own)
        if fallback is not None:
            if not fallback.is_file():
                raise ExportError(f"training config {fallback} does not exist")
            return _read_config_file(fallback), str(fallback)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExportError(f"cannot read the training configuration: {exc}") from exc
    LOG.warning(
        "no %s in %s and no --training-config: the manifest records none",
        TRAINING_CONFIG_NAME,
        checkpoint,
    )
    return {}, ""


def _base_model(config: dict[str, Any], explicit: str | None) -> str:
    if explicit:
        return explicit
    for key in BASE_MODEL_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):  # nested, e.g. {"model": {"name_or_path": ...}}
            for inner in ("name_or_path", "model_name_or_path", "path", "id"):
                if isinstance(value.get(inner), str) and value[inner]:
                    return value[inner]
    return ""


def _system_prompt(config: dict[str, Any]) -> str | None:
    """The system turn of training's chat envelope (``data.system_prompt``), which inference
    must send too; None when the config has none (the chat template's default)."""
    data = config.get("data")
    value = data.get("system_prompt") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------- loading


def load_checkpoint(
    checkpoint: Path, processor_fallbacks: Sequence[str], dtype: str = "auto"
) -> tuple[Any, Any]:
    """Model (its own dtype, or ``dtype``) and full processor, through the loader training uses."""
    try:
        model = load_model(checkpoint, dtype=dtype)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    try:
        return model, load_processor(checkpoint, processor_fallbacks)
    except CheckpointError as exc:
        raise ExportError(
            f"{exc}; pass --processor with a folder or id of the base model's processor"
        ) from exc


# --------------------------------------------------------------------------- export


def _listing(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )


def _share_like_umask(folder: Path) -> None:
    """Give the export the ordinary permissions (0666/0777 less the umask): mkdtemp makes the
    staging folder 0700 and safetensors writes 0600, so another user on the robot (the node's
    service account) could not read the checkpoint."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def export(
    checkpoint: str | Path,
    out: str | Path,
    *,
    mode: str = PromptMode.WISE_S.value,
    brevity: str | None = DEFAULT_BREVITY,
    segmenter: str = DEFAULT_SEGMENTER,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    answer_schema: str = AnswerSchema.SINGLE.value,
    policy_frame: int = POLICY_FRAME,
    training_config: str | Path | None = None,
    base_model: str | None = None,
    processor: str | None = None,
    dtype: str = "auto",
    force: bool = False,
) -> Manifest:
    """Export ``checkpoint`` to ``out``; returns the manifest written (and read back)."""
    checkpoint, out = Path(checkpoint), Path(out)
    try:
        spec_for(mode, brevity=brevity, schema=answer_schema)  # validates mode/brevity/schema
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    if max_new_tokens < 1:
        raise ExportError("max_new_tokens must be >= 1")
    try:
        ResizeProtocol(policy_frame)  # the policy frame rule lives in the core
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    check_checkpoint(checkpoint)
    if out.resolve() == checkpoint.resolve():
        raise ExportError("--out must differ from --checkpoint")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty; use --force to replace it")
    config, config_source = resolve_training_config(
        checkpoint, Path(training_config) if training_config else None
    )
    base = _base_model(config, base_model)
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    model, proc = load_checkpoint(checkpoint, [s for s in (processor, base) if s], dtype)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        model.save_pretrained(staging)  # transformers 5 writes safetensors only
        proc.save_pretrained(staging)
        written_weights, pickles = find_weights(staging)
        if not written_weights or pickles:
            raise ExportError(
                f"save_pretrained did not write safetensors only: {_listing(staging)}"
            )
        if config:
            (staging / TRAINING_CONFIG_NAME).write_text(
                json.dumps(config, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
            )
        manifest = Manifest(
            prompt_mode=PromptMode(mode).value,
            brevity=brevity,
            answer_schema=AnswerSchema(answer_schema).value,
            policy_frame=policy_frame,
            segmenter=segmenter,
            max_new_tokens=max_new_tokens,
            system_prompt=_system_prompt(config),
            files=tuple(_listing(staging)),
            training_config=config,
            training_config_sha256=config_hash(config) if config else "",
            base_model=base,
        )
        write_manifest(staging, manifest)
        try:
            checked = read_manifest(staging)
        except ManifestError as exc:
            raise ExportError(f"the written manifest does not read back: {exc}") from exc
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        _share_like_umask(staging)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    LOG.info(
        "exported %s -> %s (training config from %s)", checkpoint, out, config_source or "nowhere"
    )
    return checked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wise_training.export",
        description="Write a WISE checkpoint folder (safetensors + processor + wise_manifest.json) "
        "that wise_perception loads with no other settings.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="trained policy folder (training output_dir/final or checkpoint-N)",
    )
    parser.add_argument("--out", type=Path, required=True, help="export folder (created)")
    parser.add_argument(
        "--mode",
        default=PromptMode.WISE_S.value,
        choices=[m.value for m in PromptMode if m is not PromptMode.WISE_TRAIN],
        help="inference mode the folder runs in by default (default: wise_s)",
    )
    parser.add_argument(
        "--brevity",
        default=DEFAULT_BREVITY,
        help=f"WISE-S brevity instruction (default: {DEFAULT_BREVITY!r})",
    )
    parser.add_argument(
        "--segmenter",
        default=DEFAULT_SEGMENTER,
        help=f"SAM2 folder or id to pair with (default: {DEFAULT_SEGMENTER})",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"cap on generated tokens when served (default: {DEFAULT_MAX_NEW_TOKENS})",
    )
    parser.add_argument(
        "--answer-schema",
        default=AnswerSchema.SINGLE.value,
        choices=[s.value for s in AnswerSchema],
    )
    parser.add_argument(
        "--policy-frame",
        type=int,
        default=POLICY_FRAME,
        help="square frame the policy sees and answers in (multiple of 28)",
    )
    parser.add_argument(
        "--training-config",
        type=Path,
        default=None,
        help=f"resolved training config (JSON/YAML) when the checkpoint has no {TRAINING_CONFIG_NAME}",
    )
    parser.add_argument(
        "--base-model", default=None, help="base model id/path (default: from the training config)"
    )
    parser.add_argument(
        "--processor",
        default=None,
        help="where to take the processor from if the checkpoint has only a tokenizer",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=EXPORT_DTYPES,
        help="weights as trained (auto, default) or cast, e.g. bfloat16 for a smaller folder",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = export(
            args.checkpoint,
            args.out,
            mode=args.mode,
            brevity=args.brevity,
            segmenter=args.segmenter,
            max_new_tokens=args.max_new_tokens,
            answer_schema=args.answer_schema,
            policy_frame=args.policy_frame,
            training_config=args.training_config,
            base_model=args.base_model,
            processor=args.processor,
            dtype=args.dtype,
            force=args.force,
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"exported to {args.out}: mode={manifest.prompt_mode} segmenter={manifest.segmenter} "
        f"files={len(manifest.files)} training_config_sha256={manifest.training_config_sha256 or '-'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
