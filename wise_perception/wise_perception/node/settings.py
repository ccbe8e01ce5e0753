"""The node's parameters: one table, declared with descriptors, read into typed settings.

Each field of :class:`Settings` is one ROS parameter, with its default, its description, its
bounds or choices, and whether it is read-only; ``ros2 param describe`` shows all of it.
Read-only parameters are those whose change would need the models reloaded or the topics,
queue and timer rebuilt: they are fixed for the life of the process (set them in the
parameters file or the launch arguments). The others are read again on every configure.
``config/segment.yaml`` sets exactly these parameters (a test checks it).

The settings are read on configure and checked in one place, :meth:`Settings.__post_init__`,
which names every problem in one error; configure then fails with it. (ROS also refuses a
value outside a declared range, at start-up or on ``ros2 param set``.)
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..core.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_COMMAND_CHARS
from ..core.manifest import DEFAULT_POLICY
from ..core.prompts import DEFAULT_BREVITY, PromptMode
from ..tracking import TrackSettings

RELIABILITY = {
    "reliable": ReliabilityPolicy.RELIABLE,
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
}
# auto: the reliability the camera offers, re-checked while active (node.image_qos).
IMAGE_RELIABILITY = ("auto", *RELIABILITY)
_HISTORY = {"keep_last": HistoryPolicy.KEEP_LAST, "keep_all": HistoryPolicy.KEEP_ALL}
_DURABILITY = {
    "volatile": DurabilityPolicy.VOLATILE,
    "transient_local": DurabilityPolicy.TRANSIENT_LOCAL,
}
ENCODE_AHEAD = ("auto", "true", "false")
_MODES = ("", *(m.value for m in PromptMode))


def _param(
    default: Any,
    description: str,
    *,
    bounds: tuple[float, float] | None = None,
    choices: tuple[str, ...] = (),
    read_only: bool = False,
    also_bool: bool = False,
) -> Any:
    """One row of the table. ``bounds``: inclusive range of a number; ``choices``: the accepted
    strings (compared stripped and lower-cased); ``also_bool``: true/false are also accepted
    (``-p name:=true`` reaches ROS as a bool, not the string "true")."""
    row = {
        "description": description,
        "bounds": bounds,
        "choices": choices,
        "read_only": read_only,
        "also_bool": also_bool,
    }
    return field(default=default, metadata=row)


@dataclass(frozen=True)
class Settings:
    """The node's parameters as read on configure, typed and checked (the table itself)."""

    autostart: bool = _param(True, "configure and activate right after start", read_only=True)
    exit_on_autostart_failure: bool = _param(
        False,
        "with autostart: exit with status 1 when configure or activate fails (make run sets it); "
        "false: stay up, report the failure on /diagnostics and in every command's result, and "
        "wait for the lifecycle to try again",
        read_only=True,
    )
    # Models: a change needs them reloaded.
    policy_model: str = _param(
        DEFAULT_POLICY,
        "policy checkpoint: local folder, hub model id or vLLM server URL",
        read_only=True,
    )
    segmenter_model: str = _param(
        "",
        "SAM2 folder or hub id; empty: the policy's manifest, else SAM2-Large",
        read_only=True,
    )
    device: str = _param("auto", "torch device: auto, cpu, cuda, cuda:1, ...", read_only=True)
    dtype: str = _param("auto", "model dtype: auto, bfloat16, float16, float32", read_only=True)
    mode: str = _param(
        "",
        "prompt mode; empty: the checkpoint manifest's, else wise_s",
        choices=_MODES,
        read_only=True,
    )
    brevity: str = _param(
        "",
        f"brevity instruction of wise_s; empty: the manifest's, else {DEFAULT_BREVITY!r}",
        read_only=True,
    )
    max_new_tokens: int = _param(
        0,
        "generation budget of the policy; 0: the manifest's, else 1024",
        bounds=(0, 32768),
        read_only=True,
    )
    compile: bool = _param(
        False,
        "CUDA: compiled decode steps, prefill, vision tower and SAM2 encoder (compiles on warm-up)",
        read_only=True,
    )
    forced_schema: bool = _param(
        True,
        "transformers engine: append the answer's fixed JSON text instead of decoding it token "
        "by token (same text while the model follows the schema; fewer sequential forwards)",
        read_only=True,
    )
    int8_decode: bool = _param(
        False,
        "transformers engine: int8 weight-only language model layers (about half the bytes "
        "per decode step); re-check accuracy on the real checkpoint before turning it on",
        read_only=True,
    )
    warmup: bool = _param(
        True, "serve one synthetic request on activate, so the first command is not slow"
    )
    encode_ahead: str = _param(
        "auto",
        "while no command waits, start SAM2's encoding of the newest frame, so a command on it "
        "pays no encoder; auto: on when SAM2 runs on CUDA, off on CPU (it would compete with "
        "inference for the cores)",
        choices=ENCODE_AHEAD,
        also_bool=True,
    )
    # auto by default, as `ros2 bag record`: reliable from reliable cameras (measured with
    # bench_node --stream-seconds, 30 Hz 640x480, loaded 2-core host, two runs: a best-effort
    # subscription received 10-22% of a reliable stream's frames, up to 1.7-3.7 s old; a reliable
    # one 76-79%, at most 0.18 s old), best effort from the cameras that publish only that.
    image_reliability: str = _param(
        "auto",
        "image QoS reliability: auto (reliable, or best_effort while a publisher on the topic "
        "offers only best effort; re-checked as publishers come and go), reliable, best_effort",
        choices=IMAGE_RELIABILITY,
        read_only=True,
    )
    image_history: str = _param(
        "keep_last", "image QoS history", choices=tuple(_HISTORY), read_only=True
    )
    image_depth: int = _param(1, "image QoS depth", bounds=(1, 1000), read_only=True)
    image_durability: str = _param(
        "volatile", "image QoS durability", choices=tuple(_DURABILITY), read_only=True
    )
    command_depth: int = _param(
        100, "command QoS depth (reliable, keep last)", bounds=(1, 10000), read_only=True
    )
    result_depth: int = _param(
        100,
        "result QoS depth (reliable, keep last): results must not be lost",
        bounds=(1, 10000),
        read_only=True,
    )
    output_depth: int = _param(
        10,
        "QoS depth of mask, rationale, overlay and detections",
        bounds=(1, 10000),
        read_only=True,
    )
    max_image_age_s: float = _param(
        1.0, "a command only uses an image at most this old", bounds=(0.0, 3600.0)
    )
    command_wait_s: float = _param(
        2.0, "how long a command waits for a usable image", bounds=(0.0, 600.0)
    )
    queue_size: int = _param(
        4,
        "commands waiting for inference; more are rejected (queue_full)",
        bounds=(1, 1000),
        read_only=True,
    )
    use_overlay: bool = _param(
        False, "also publish an rgb8 overlay of mask, box, points and rationale", read_only=True
    )
    # Tracking (reason once, then track: wise_perception.tracking).
    track_default: bool = _param(
        False,
        'track the answer through later frames when a command does not say ("track" in its '
        "JSON): a mask per frame on mask, a JSON per frame on track",
    )
    track_score_threshold: float = _param(
        0.5,
        "a tracked frame whose score (SAM2's object-presence probability) is below this does "
        "not see the object",
        bounds=(0.0, 1.0),
    )
    track_lost_after: int = _param(
        5, "frames in a row below the threshold before the object is lost", bounds=(1, 100000)
    )
    track_timeout_s: float = _param(
        0.0, "seconds a track runs before it ends (timeout); 0: no limit", bounds=(0.0, 86400.0)
    )
    reground_on_loss: bool = _param(
        False,
        "when the object is lost, ask the policy again with the same command on the newest "
        "frame and track its new answer (no second result: tracking output only)",
    )
    track_seed_with: str = _param(
        "prompts",
        "seed the tracker with the answer's boxes and points (prompts) or its masks (masks)",
        choices=("prompts", "masks"),
    )
    # The pipeline is loaded with the node's limits: what the node accepts, the pipeline serves.
    max_image_pixels: int = _param(
        DEFAULT_MAX_IMAGE_PIXELS,
        "larger images are rejected, here and in the pipeline (0 = no limit)",
        bounds=(0, 1 << 40),
        read_only=True,
    )
    max_command_chars: int = _param(
        MAX_COMMAND_CHARS,
        "longer commands are rejected, here and in the pipeline",
        bounds=(1, 1_000_000),
        read_only=True,
    )
    diagnostics_period_s: float = _param(
        1.0, "period of the /diagnostics status", bounds=(0.05, 3600.0), read_only=True
    )

    def __post_init__(self) -> None:
        problems = [p for f in fields(self) if (p := _problem(f, getattr(self, f.name)))]
        if not self.policy_model.strip():
            problems.append("policy_model must name a checkpoint folder, model id or server URL")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))

    @classmethod
    def from_parameters(cls, values: dict[str, Any]) -> Settings:
        """Settings from parameter values by name (every declared parameter); the choices are
        read stripped and lower-cased, and a bool where also one is accepted as its name."""
        read = {}
        for f in fields(cls):
            value = values[f.name]
            if f.metadata["also_bool"] and isinstance(value, bool):
                value = str(value).lower()
            if f.metadata["choices"] and isinstance(value, str):
                value = value.strip().lower()
            read[f.name] = value
        return cls(**read)

    def track_settings(self) -> TrackSettings:
        """How a command's track is seeded and when it ends."""
        return TrackSettings.from_parameters(self)

    def image_qos(self, reliability: ReliabilityPolicy | None = None) -> QoSProfile:
        """The image subscription's QoS; ``reliability`` is auto's choice (required for auto)."""
        if reliability is None:
            if self.image_reliability not in RELIABILITY:
                raise ValueError("image_reliability=auto: pass the reliability auto chose")
            reliability = RELIABILITY[self.image_reliability]
        return QoSProfile(
            reliability=reliability,
            history=_HISTORY[self.image_history],
            depth=self.image_depth,
            durability=_DURABILITY[self.image_durability],
        )


def reliable(depth: int) -> QoSProfile:
    """Reliable, keep last ``depth``: commands, results and the other outputs."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def _problem(f: Field[Any], value: Any) -> str:
    """What is wrong with one parameter's value ("" when nothing is)."""
    expected = type(f.default)
    if type(value) is not expected:  # exactly: a bool is an int to Python, never to ROS
        return f"{f.name} must be a {expected.__name__}, got {value!r}"
    choices, bounds = f.metadata["choices"], f.metadata["bounds"]
    if choices and value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        return f"{f.name}={value!r} is not one of {shown}"
    if bounds and not bounds[0] <= value <= bounds[1]:
        return f"{f.name}={value!r} is outside [{bounds[0]}, {bounds[1]}]"
    return ""


# The table, for declaring it and for checking config/segment.yaml against it.
PARAMETERS: tuple[Field[Any], ...] = fields(Settings)


def descriptor(f: Field[Any]) -> ParameterDescriptor:
    """The ROS descriptor of one parameter: what ``ros2 param describe`` shows."""
    row = f.metadata
    described = ParameterDescriptor(
        name=f.name,
        description=row["description"],
        read_only=row["read_only"],
        dynamic_typing=row["also_bool"],
    )
    if row["choices"]:
        named = ", ".join(repr(c) if c == "" else c for c in row["choices"])
        described.additional_constraints = f"one of: {named}"
    if row["bounds"] and isinstance(f.default, float):
        low, high = row["bounds"]
        described.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
        ]
    elif row["bounds"]:
        low, high = row["bounds"]
        described.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return described
