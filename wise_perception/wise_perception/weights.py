"""Checkpoint weight files: what is wrong with one, said with its path and what to do.

A load that fails on a damaged file otherwise ends in the reader's bare message (safetensors:
"Error while deserializing header: incomplete metadata", naming no file). After a failed load
the loaders (policy, both SAM2 backends) call :func:`raise_if_damaged`, which opens each
weights file of the checkpoint on its own and names the first one that cannot be read.
"""

from __future__ import annotations

from pathlib import Path

REDOWNLOAD = (
    "it is truncated or corrupted (an interrupted download or copy?): download or copy it "
    "again (a hub id: delete that file from the Hugging Face cache and load again)"
)


class CheckpointError(RuntimeError):
    """The checkpoint cannot be loaded as it is; the message says why."""


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def damaged_safetensors(files: list[Path]) -> tuple[Path, str] | None:
    """The first of ``files`` whose safetensors header or data cannot be read, with why."""
    from safetensors import safe_open

    for path in files:
        try:
            with safe_open(str(path), framework="np") as handle:
                handle.keys()
        except Exception as exc:  # SafetensorError (not importable by name), OSError
            return path, first_line(exc)
    return None


def checkpoint_folder(source: str) -> Path | None:
    """The local folder holding ``source``'s files: the folder itself, or a hub id's snapshot
    in the local Hugging Face cache (None when neither is there)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not a hub id, or not cached: nothing local to check
        return None


def raise_if_damaged(source: str, what: str, error: BaseException) -> None:
    """After ``error`` ended loading ``source`` (``what``: "the policy", "SAM2"): a
    :class:`CheckpointError` naming the damaged safetensors file, if one is; else nothing."""
    folder = checkpoint_folder(source)
    if folder is None:
        return
    damaged = damaged_safetensors(sorted(folder.glob("*.safetensors")))
    if damaged is not None:
        path, why = damaged
        raise CheckpointError(
            f"cannot load {what} from {source}: {path} is not a readable safetensors file "
            f"({why}); {REDOWNLOAD}"
        ) from error
