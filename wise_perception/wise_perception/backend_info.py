"""What a loaded model backend runs (for logs and ``WisePipeline.describe``): plain values
kept at load time, so reading them never touches a device, a file or the network."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BackendInfo:
    name: str  # the checkpoint, hub id or server URL it came from
    backend: str  # the loader's backend name: transformers, vllm, vllm-server, sam2
    device: str = ""  # "" where the backend does not choose it (a server)
    dtype: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``bfloat16``; "" for None."""
    return "" if dtype is None else str(dtype).replace("torch.", "")
