"""Policy backends (transformers, vLLM in-process, vLLM server client) behind one interface.

Heavy libraries are imported only when a backend is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.manifest import DEFAULT_MAX_NEW_TOKENS
from .base import PolicyBackend, PolicyOutput

__all__ = ["BACKENDS", "PolicyBackend", "PolicyOutput", "load_policy"]

BACKENDS = ("transformers", "vllm", "vllm-server")


def load_policy(
    policy: str | Path,
    *,
    backend: str = "auto",
    device: str | None = None,
    dtype: Any = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    **options: Any,
) -> PolicyBackend:
    """Load a policy backend.

    ``backend="auto"``: an ``http(s)://`` URL is a vLLM OpenAI-compatible server (the served
    model name may follow a ``#``: ``http://host:8000#wise-s``), anything else a local folder or
    hub id for transformers. ``options`` go to the backend (``system_prompt``; for
    transformers ``forced_schema``, ``int8_decode``...; for vLLM ``gpu_memory_utilization``...;
    for the server ``model``, ``timeout_s``, ``tokenizer``, ``api_key``).
    """
    source = str(policy)
    if backend == "auto":
        backend = "vllm-server" if source.startswith(("http://", "https://")) else "transformers"
    if backend == "transformers":
        from .transformers.backend import TransformersPolicy

        return TransformersPolicy.from_pretrained(
            source, device=device, dtype=dtype, max_new_tokens=max_new_tokens, **options
        )
    if backend == "vllm":
        from .vllm_engine import VllmPolicy

        return VllmPolicy.from_pretrained(
            source, dtype=dtype, max_new_tokens=max_new_tokens, **options
        )
    if backend == "vllm-server":
        from .vllm_client import VllmServerPolicy

        url, _, model = source.partition("#")
        if model and "model" not in options:
            options["model"] = model
        return VllmServerPolicy(url, max_new_tokens=max_new_tokens, **options)
    raise ValueError(
        f"unknown policy backend {backend!r}; choose one of {', '.join(BACKENDS)} or auto"
    )
