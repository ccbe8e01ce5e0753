"""Loading a policy checkpoint's model: the one loader of inference, training and export.

The model is built with its own Hugging Face class (``config.architectures``, built into
transformers; else ``AutoModelForImageTextToText``), remote code is never trusted, and weights
are read from safetensors; a local folder holding only pickles (``pytorch_model*.bin``) is read
only when every pickle loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..weights import CheckpointError, first_line, raise_if_damaged

__all__ = ["CheckpointError", "check_pickles_are_safe", "find_weights", "first_line", "load_model"]


def find_weights(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle ``pytorch_model*.bin`` files) of a checkpoint folder."""
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for p in folder.glob("*.bin") if p.name.startswith("pytorch_model"))
    return safetensors, pickles


def check_pickles_are_safe(files: Sequence[Path]) -> None:
    """Each pickle must load with ``weights_only=True`` (tensors and plain containers only)."""
    import torch

    for path in files:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # UnpicklingError and friends
            raise CheckpointError(
                f"{path} is a pickle that does not load with weights_only=True ({type(exc).__name__}: "
                f"{first_line(exc)}); refusing to unpickle it. Re-save the checkpoint as safetensors."
            ) from exc


def _needs_safetensors(source: str) -> bool:
    """False only for a local folder whose weights are pickles that passed the check."""
    folder = Path(source)
    if not folder.is_dir():
        return True  # a hub id: safetensors only
    safetensors, pickles = find_weights(folder)
    if safetensors or not pickles:
        return True
    check_pickles_are_safe(pickles)
    return False


def load_model(
    source: str | Path, *, dtype: Any = "auto", attn_implementation: str | None = None
) -> Any:
    """The checkpoint's model (``dtype``: ``auto`` keeps the checkpoint's, else a torch dtype or
    its name), on the CPU."""
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText

    source = str(source)
    use_safetensors = _needs_safetensors(source)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read the config of {source}: {first_line(exc)}") from exc
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    model_class = model_class or AutoModelForImageTextToText
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": use_safetensors}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return model_class.from_pretrained(source, trust_remote_code=False, **kwargs)
    except Exception as exc:
        raise_if_damaged(source, "the policy", exc)  # names a truncated weights file
        raise CheckpointError(
            f"cannot load the policy from {source} with {model_class.__name__}: {first_line(exc)}"
        ) from exc
