"""Where the models come from: a local folder (maybe an exported WISE checkpoint with its
manifest), a Hugging Face hub id, or a vLLM server URL; resolved before anything loads.

A hub id that is neither cached locally nor reachable fails here at once, with what to do,
instead of after half a minute of download retries with a bare OSError.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .core.manifest import DEFAULT_SEGMENTER, MANIFEST_NAME, Manifest, read_manifest

_LOCAL_PATH_RE = re.compile(r"^(\.{1,2}[/\\]|[/\\~]|[A-Za-z]:[/\\])")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# One TCP connect decides whether the hub can be asked at all (a blocked network hangs the
# hub client in retries for ~30 s).
HUB_PROBE_TIMEOUT_S = 3.0


class CheckpointUnavailable(OSError):
    """A checkpoint cannot be had from where it was named; the message says what to do.

    ``role``: ``policy`` or ``segmenter``. The pipeline does not know what its caller calls
    the setting that names the checkpoint (a node parameter, a CLI flag): the caller says it
    with :meth:`naming`, so the hint names what the user can set.
    """

    def __init__(self, role: str, source: str, setting: str = "", example: str = "") -> None:
        self.role, self.source = role, source
        fix = f"Set {setting}" if setting else f"Point the {role}"
        example = f" ({example})" if example else ""
        super().__init__(
            f"the {role} {source!r} is a Hugging Face hub id, it is not in the local cache and "
            f"the hub cannot be reached (offline?). {fix} to a local checkpoint folder{example}, "
            "or try `make demo`, which runs offline on the committed demo checkpoint "
            "(checkpoints/wise-s-scenes, a small policy for synthetic scenes)."
        )

    def naming(self, setting: str, example: str = "") -> CheckpointUnavailable:
        """The same error, its hint naming ``setting`` (e.g. "the node parameter 'x'"), with an
        ``example`` of setting it."""
        return CheckpointUnavailable(self.role, self.source, setting, example)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def looks_local(source: str) -> bool:
    """True for anything that is a path rather than a hub id (``./x``, ``/x``, ``~/x``...)."""
    return bool(_LOCAL_PATH_RE.match(source)) or not _HUB_ID_RE.match(source)


def is_hub_id(source: str) -> bool:
    return (
        not is_url(source)
        and not Path(os.path.expanduser(source)).exists()
        and not (looks_local(source))
    )


def manifest_for(source: str) -> Manifest | None:
    """The policy folder's manifest; None for hub ids, URLs and plain Hugging Face folders."""
    if is_url(source):
        return None
    path = Path(os.path.expanduser(source))
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"policy {path} is a file; expected a checkpoint folder")
        if (path / MANIFEST_NAME).exists():
            return read_manifest(path)  # raises ManifestError with the reason
        return None
    if looks_local(source):
        raise FileNotFoundError(f"policy folder {path} does not exist")
    return None


def segmenter_source(explicit: Any, manifest: Manifest | None, policy_source: str) -> str:
    """The SAM2 to load: as given, else the policy manifest's (maybe inside its folder), else
    the paper's SAM2-Large."""
    if explicit is not None:
        source = str(explicit)
    elif manifest is not None:
        source = manifest.segmenter
        relative = Path(policy_source) / source
        if not Path(source).is_absolute() and relative.exists():
            source = str(relative)  # a segmenter shipped inside the checkpoint folder
    else:
        source = DEFAULT_SEGMENTER
    path = Path(os.path.expanduser(source))
    if not path.exists() and looks_local(source):
        raise FileNotFoundError(f"segmenter {path} does not exist")
    return str(path) if path.exists() else source


def _cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _hub_reachable() -> bool:
    from huggingface_hub.constants import ENDPOINT, HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        return False
    url = urlparse(ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def check_reachable(source: str, role: str) -> None:
    """Raise :class:`CheckpointUnavailable` for a hub id that is not cached and cannot be
    downloaded now (``role``: ``policy`` or ``segmenter``); local folders and URLs are checked
    by their loaders."""
    if not is_hub_id(source) or _cached(source) or _hub_reachable():
        return
    raise CheckpointUnavailable(role, source)
