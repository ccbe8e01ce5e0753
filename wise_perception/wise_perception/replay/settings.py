"""The node parameters a replay uses, read from the node's own parameters file.

A replay pairs, limits, loads and tracks exactly as a node with these parameters would: the
node's defaults (a test checks they are the node's), then the robot's parameters file
(``--params-file``, the YAML the node was started with), then the command line. The node's
other parameters (QoS, diagnostics, encode ahead, overlay) change no result and are ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..core.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_COMMAND_CHARS
from ..core.manifest import DEFAULT_POLICY
from ..core.prompts import PromptMode
from ..tracking import TrackSettings


@dataclass(frozen=True)
class ReplaySettings:
    """The node's parameters that decide a replay's results (same names, same defaults)."""

    policy_model: str = DEFAULT_POLICY
    segmenter_model: str = ""
    device: str = "auto"
    dtype: str = "auto"
    mode: str = ""
    brevity: str = ""
    max_new_tokens: int = 0
    compile: bool = False
    forced_schema: bool = True
    int8_decode: bool = False
    warmup: bool = True
    max_image_age_s: float = 1.0
    command_wait_s: float = 2.0
    queue_size: int = 4
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_command_chars: int = MAX_COMMAND_CHARS
    # Tracking (reason once, then track), as the node's parameters of the same names.
    track_default: bool = False
    track_score_threshold: float = 0.5
    track_lost_after: int = 5
    track_timeout_s: float = 0.0
    reground_on_loss: bool = False
    track_seed_with: str = "prompts"

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value, expected = getattr(self, f.name), type(f.default)
            # ints are accepted where floats are (YAML writes 2 for 2.0); a bool never is a number
            number = expected is float and type(value) is int
            if type(value) is not expected and not number:
                problems.append(f"{f.name} must be a {expected.__name__}, got {value!r}")
        if not problems:
            if self.mode and self.mode not in {m.value for m in PromptMode}:
                problems.append(f"mode={self.mode!r} is not a prompt mode")
            if not 0.0 <= self.max_image_age_s <= 3600.0:
                problems.append(f"max_image_age_s={self.max_image_age_s} is outside [0, 3600]")
            if not 0.0 <= self.command_wait_s <= 600.0:
                problems.append(f"command_wait_s={self.command_wait_s} is outside [0, 600]")
            if not 1 <= self.queue_size <= 1000:
                problems.append(f"queue_size={self.queue_size} is outside [1, 1000]")
            if self.max_image_pixels < 0 or self.max_command_chars < 1:
                problems.append("max_image_pixels must be >= 0 and max_command_chars >= 1")
            try:
                self.track_settings()
            except ValueError as exc:
                problems.append(f"track: {exc}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def with_values(self, values: dict[str, Any]) -> ReplaySettings:
        """These settings with ``values`` (by parameter name; None: not given) on top."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(given) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        return replace(self, **given)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def track_settings(self) -> TrackSettings:
        """How a command's track is seeded and when it ends (timeout in bag seconds)."""
        return TrackSettings.from_parameters(self)


def read_params_file(path: Path) -> dict[str, Any]:
    """The replay's parameters from a node parameters file (``ros__parameters`` of its
    ``/**`` or ``wise_perception`` entry, or of its only entry); the node's others are left out."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the parameters file {path}: {exc}") from None
    entries = {
        str(name): body["ros__parameters"]
        for name, body in (document or {}).items()
        if isinstance(body, dict) and isinstance(body.get("ros__parameters"), dict)
    }
    chosen = [n for n in entries if n == "/**" or n.rstrip("/").endswith("wise_perception")]
    if len(entries) == 1:
        chosen = list(entries)
    if len(chosen) != 1:
        raise ValueError(
            f"{path}: expected one node entry with ros__parameters (/** or wise_perception), "
            f"found {sorted(entries) or 'none'}"
        )
    names = {f.name for f in fields(ReplaySettings)}
    return {k: v for k, v in entries[chosen[0]].items() if k in names}
