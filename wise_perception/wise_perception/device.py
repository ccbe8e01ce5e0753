"""Which device and dtype the models run on, and giving GPU memory back: one place for both.

torch is imported inside the functions: the core, the node and the CLI's argument checks
import this package without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given,
    checked: ValueError for a name torch does not know or a CUDA device this machine lacks."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(str(device))
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available on this machine "
                "(no GPU visible to torch); use device cpu, or leave the device unset"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r} requested but this machine has {count} GPU(s)")
    return str(device)


def resolve_dtype(dtype: Any, device: str) -> Any:
    """A torch dtype from a name (``bfloat16``, ``bf16``, ``float32``...) or None/``auto``:
    bfloat16 on CUDA, float32 elsewhere (CPU half precision is slow and lossy)."""
    import torch

    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}")
    return getattr(torch, name)


def release_cuda_memory() -> None:
    """Return cached CUDA memory to the driver, cuBLAS's workspaces included (about 32 MiB per
    thread and stream on Hopper: 66 MiB stayed after closing the tiny models on an H100), so
    that deactivating the node really frees the GPU. A no-op without CUDA."""
    import gc

    import torch

    gc.collect()  # models dropped by their owners may still be in reference cycles
    if not torch.cuda.is_available():
        return
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is not None:
        clear_workspaces()
    torch.cuda.empty_cache()


class SideStream:
    """A CUDA stream of a model's own (the segmenter's), so its work overlaps the policy's on
    the default stream instead of queueing behind it; on the CPU it does nothing.

    ``with stream.active():`` runs the block's GPU work on the stream and, at the end, waits
    for that stream only, so its results are ready without waiting for the policy's work.
    """

    def __init__(self, device: str) -> None:
        import torch

        self.stream = (
            torch.cuda.Stream(device=device)
            if str(device).startswith("cuda") and torch.cuda.is_available()
            else None
        )

    @contextmanager
    def active(self) -> Iterator[None]:
        import torch

        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            yield
        if self.stream is not None:
            self.stream.synchronize()
