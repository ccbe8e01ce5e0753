"""The WISE perception lifecycle node: camera image + spoken command in, mask + rationale out.

The node only converts messages, pairs commands with frames, queues, publishes and reports;
the models live in :class:`wise_perception.pipeline.WisePipeline`.

Topics (relative names, so ``-r __ns:=/wise`` puts them under ``/wise``):

============== ===== ================================ =======================================
topic          dir   type                             when
============== ===== ================================ =======================================
image          in    sensor_msgs/Image                while active (QoS: ``image_*`` params)
command        in    std_msgs/String                  while configured (reliable): plain
                                                        text or {"id": ..., "command": ...}
result         out   std_msgs/String (JSON)           exactly one per command, every status
mask           out   sensor_msgs/Image mono8 0/255    successes only
rationale      out   std_msgs/String                  successes only
overlay        out   sensor_msgs/Image rgb8           successes, when ``use_overlay``
detections     out   vision_msgs/Detection2DArray     successes, where vision_msgs is installed
/diagnostics   out   diagnostic_msgs/DiagnosticArray  every ``diagnostics_period_s``
============== ===== ================================ =======================================

Every output carries the header of the image it was computed on. Results that have no image
(no_image, not_ready, queue_full, invalid_command before pairing) carry a header stamped
with the node clock and an empty ``frame_id``.

Lifecycle: parameters are declared on construction and read on configure (which also creates
the publishers, the command subscription and the worker thread); activate loads the models
and subscribes to images; deactivate unsubscribes and frees the models (and GPU memory);
cleanup stops the worker. While configured but inactive, commands are still answered, with
``not_ready`` results. With ``autostart`` (default) the node configures and activates itself.

Loading never makes the node deaf: the executor is multi-threaded and the lifecycle services,
commands, images and diagnostics each have their own callback group, and autostart runs the
transitions on a thread of their own. While a model loads (minutes for a 7B checkpoint)
commands get an immediate ``not_ready`` saying so, ``/diagnostics`` reports ``models:
loading``, and SIGINT ends the process at once (a load or an inference in progress is not
waited for: the process exit frees its memory).

Commands: plain text, or ``{"id": <string or number>, "command": "<text>"}``; every result
echoes the caller's ``id`` (null without one) next to the node's own ``node.request_id``.
The command and image limits (``max_command_chars``, ``max_image_pixels``) are checked here
with the pipeline's own functions and handed to the pipeline, so both apply the same ones.

Pairing: a command takes the newest image whose age (node clock minus header stamp; the
receipt time when the stamp is zero) is at most ``max_image_age_s``. Without one it waits up
to ``command_wait_s`` for a fresh image, then gets ``no_image``. Images are validated at
receipt (encoding, size, step, ``max_image_pixels``); an invalid newest image is remembered
with its error, and a command paired with it gets ``invalid_image`` naming the problem (the
node does not fall back to an older frame: the newest one is what the camera sees now).

Inference runs on one worker thread fed by a bounded queue (``queue_size``); a command that
finds the queue full is answered at once with ``queue_full``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from . import ros_messages as rm
from .core.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_COMMAND_CHARS
from .core.manifest import DEFAULT_POLICY
from .core.prompts import DEFAULT_BREVITY, PromptMode
from .result import Result, Status
from .visualize import overlay

NODE_NAME = "wise_perception"
# Executor threads: one can sit in a lifecycle transition (a model load) while commands,
# images and diagnostics, each in its own callback group, keep theirs.
EXECUTOR_THREADS = 4
# How long SIGINT waits for the inference worker before the process exits regardless.
SHUTDOWN_WAIT_S = 0.5


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str


# The node's parameters: config/segment.yaml sets exactly these (a test checks it).
PARAMETERS: tuple[Param, ...] = (
    Param("autostart", True, "configure and activate right after start"),
    Param("policy_model", DEFAULT_POLICY, "policy checkpoint: local folder or hub model id"),
    Param(
        "segmenter_model",
        "",
        "SAM2 folder or hub id; empty: the policy's manifest, else SAM2-Large",
    ),
    Param("device", "auto", "torch device: auto, cpu, cuda, cuda:1, ..."),
    Param("dtype", "auto", "model dtype: auto, bfloat16, float16, float32"),
    Param(
        "mode",
        "",
        "prompt mode (wise_s, wise, wise_f, seg_zero, ...); empty: manifest, else wise_s",
    ),
    Param(
        "brevity", "", f"brevity instruction of wise_s; empty: manifest, else {DEFAULT_BREVITY!r}"
    ),
    Param("max_new_tokens", 0, "generation budget of the policy; 0: the manifest's, else 1024"),
    Param(
        "compile",
        False,
        "CUDA: static KV cache + compiled decode step (faster; compiles on warm-up)",
    ),
    Param(
        "warmup", True, "serve one synthetic request on activate, so the first command is not slow"
    ),
    # Reliable by default: measured with bench_node --stream-seconds (30 Hz 640x480, loaded
    # 2-core host, two runs), a best-effort subscription received 10-22% of the frames and
    # paired commands with frames up to 1.7-3.7 s old; a reliable one 76-79%, at most 0.18 s old.
    Param(
        "image_reliability",
        "reliable",
        "image QoS reliability: reliable | best_effort (for best_effort cameras)",
    ),
    Param("image_history", "keep_last", "image QoS history: keep_last | keep_all"),
    Param("image_depth", 1, "image QoS depth"),
    Param("image_durability", "volatile", "image QoS durability: volatile | transient_local"),
    Param("command_depth", 100, "command QoS depth (reliable, keep last)"),
    Param("result_depth", 100, "result QoS depth (reliable, keep last): results must not be lost"),
    Param("output_depth", 10, "QoS depth of mask, rationale, overlay and detections"),
    Param("max_image_age_s", 1.0, "a command only uses an image at most this old"),
    Param("command_wait_s", 2.0, "how long a command waits for a usable image"),
    Param("queue_size", 4, "commands waiting for inference; more are rejected (queue_full)"),
    Param("use_overlay", False, "also publish an rgb8 overlay of mask, box and points"),
    Param(
        "max_image_pixels",
        DEFAULT_MAX_IMAGE_PIXELS,
        "larger images are rejected, here and in the pipeline (0 = no limit)",
    ),
    Param(
        "max_command_chars",
        MAX_COMMAND_CHARS,
        "longer commands are rejected, here and in the pipeline",
    ),
    Param("diagnostics_period_s", 1.0, "period of the /diagnostics status"),
)
PARAMETER_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)

_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}
_HISTORY = {"keep_last": HistoryPolicy.KEEP_LAST, "keep_all": HistoryPolicy.KEEP_ALL}
_DURABILITY = {
    "volatile": DurabilityPolicy.VOLATILE,
    "transient_local": DurabilityPolicy.TRANSIENT_LOCAL,
}


@dataclass(frozen=True)
class Settings:
    """The parameters as read on configure."""

    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def image_qos(self) -> QoSProfile:
        return QoSProfile(
            reliability=_choice(_RELIABILITY, "image_reliability", self.image_reliability),
            history=_choice(_HISTORY, "image_history", self.image_history),
            depth=max(int(self.image_depth), 1),
            durability=_choice(_DURABILITY, "image_durability", self.image_durability),
        )


def _choice(table: dict[str, Any], name: str, value: str) -> Any:
    try:
        return table[str(value).strip().lower()]
    except KeyError:
        raise ValueError(f"parameter {name}={value!r}; expected one of {sorted(table)}") from None


class Pipeline(Protocol):
    """What the node needs from :class:`wise_perception.pipeline.WisePipeline`."""

    def segment(self, image_rgb: np.ndarray, command: str, *, frame_key: Any = None) -> Result: ...

    def close(self) -> None: ...

    def warmup(self) -> float: ...

    def describe(self) -> dict[str, Any]: ...


PipelineFactory = Callable[[Settings], Pipeline]


def load_pipeline(settings: Settings) -> Pipeline:
    """The production factory: imports torch and the models only when the node activates.

    Empty ``segmenter_model`` and ``max_new_tokens: 0`` mean "the checkpoint's manifest, else
    the pipeline's default" (an exported WISE checkpoint names its segmenter and budget).
    """
    from .pipeline import WisePipeline

    if not settings.policy_model:
        raise ValueError("parameter policy_model must name a checkpoint folder or model id")
    return WisePipeline.from_pretrained(
        policy=settings.policy_model,
        segmenter=settings.segmenter_model or None,
        device=settings.device,
        dtype=settings.dtype,
        # Empty means "what the exported checkpoint's manifest says" (else the pipeline default).
        mode=settings.mode or None,
        brevity=settings.brevity or None,
        max_new_tokens=int(settings.max_new_tokens) or None,
        policy_options={"compile": True} if settings.compile else None,
        # The node's limits are the pipeline's: what the node accepts, the pipeline serves.
        max_image_pixels=int(settings.max_image_pixels),
        max_command_chars=int(settings.max_command_chars),
    )


@dataclass
class _Frame:
    """The newest image: kept as a message until a command uses it (no copy per frame)."""

    msg: Image
    seq: int
    received: float  # time.monotonic() at receipt
    error: str = ""  # why the image is unusable, found at receipt

    @property
    def key(self) -> str:
        stamp = self.msg.header.stamp
        return f"{self.msg.header.frame_id}@{stamp.sec}.{stamp.nanosec:09d}#{self.seq}"


@dataclass
class _Job:
    command: str
    request_id: int
    received: float  # time.perf_counter() when the command callback started
    frame: _Frame | None
    client_id: str | int | float | None = None  # the caller's id, echoed in the result


@dataclass
class _Stats:
    counts: Counter[str] = field(default_factory=Counter)
    images: int = 0
    invalid_images: int = 0
    last_status: str = ""
    last_latency_ms: float = 0.0


class WisePerceptionNode(LifecycleNodeMixin, Node):
    """The lifecycle node (``rclpy.lifecycle.LifecycleNode``, with its services in their own
    reentrant callback group so that a transition that loads models does not block them)."""

    def __init__(self, pipeline_factory: PipelineFactory | None = None, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        # get_state must answer "activating" while change_state(activate) loads the models.
        LifecycleNodeMixin.__init__(self, callback_group=ReentrantCallbackGroup())
        self._pipeline_factory = pipeline_factory or load_pipeline
        for p in PARAMETERS:
            self.declare_parameter(p.name, p.default)
        self.settings: Settings | None = None
        self._pipeline: Pipeline | None = None
        self._pipeline_lock = threading.Lock()  # held by the worker during inference
        self._load_error = ""
        self._loading_since: float | None = None  # time.monotonic() while models load
        self._stopping = False  # set on SIGINT: nothing more is published
        self._image_qos_problem = ""  # a camera whose QoS this subscription cannot match
        self._active = False
        self._frame: _Frame | None = None
        self._frame_cv = threading.Condition()
        self._frame_seq = 0
        self._queue: queue.Queue[_Job | None] | None = None
        self._worker: threading.Thread | None = None
        self._request_id = 0
        self._stats = _Stats()
        self._stats_lock = threading.Lock()
        self._pubs: dict[str, Publisher] = {}
        self._command_sub: Subscription | None = None
        self._image_sub: Subscription | None = None
        self._command_group = MutuallyExclusiveCallbackGroup()
        self._image_group = MutuallyExclusiveCallbackGroup()
        # Diagnostics exist in every state, so a monitor sees an unconfigured node too.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(self.get_parameter("diagnostics_period_s").value)
        self._diag_timer = self.create_timer(
            max(period, 0.05),
            self._guarded(self._publish_diagnostics),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    def autostart(self) -> None:
        """Configure, then activate (loading the models); run off the executor's threads."""
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS and not self._stopping:
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            settings = Settings({name: self.get_parameter(name).value for name in PARAMETER_NAMES})
            if settings.mode:
                PromptMode(settings.mode)
            if int(settings.max_command_chars) < 1 or int(settings.max_image_pixels) < 0:
                raise ValueError(
                    "max_command_chars must be >= 1 and max_image_pixels >= 0 (0: no limit), "
                    f"got {settings.max_command_chars} and {settings.max_image_pixels}"
                )
            image_qos = settings.image_qos()
        except Exception as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.settings = settings
        out = QoSProfile(
            depth=max(int(settings.output_depth), 1), reliability=ReliabilityPolicy.RELIABLE
        )
        res = QoSProfile(
            depth=max(int(settings.result_depth), 1), reliability=ReliabilityPolicy.RELIABLE
        )
        self._pubs = {
            "result": self.create_publisher(String, "result", res),
            "mask": self.create_publisher(Image, "mask", out),
            "rationale": self.create_publisher(String, "rationale", out),
        }
        if settings.use_overlay:
            self._pubs["overlay"] = self.create_publisher(Image, "overlay", out)
        if rm.HAVE_VISION_MSGS:
            self._pubs["detections"] = self.create_publisher(rm.Detection2DArray, "detections", out)
        self._image_qos = image_qos
        cmd_qos = QoSProfile(
            depth=max(int(settings.command_depth), 1), reliability=ReliabilityPolicy.RELIABLE
        )
        self._command_sub = self.create_subscription(
            String, "command", self._on_command, cmd_qos, callback_group=self._command_group
        )
        self._queue = queue.Queue(maxsize=max(int(settings.queue_size), 1))
        self._worker = threading.Thread(target=self._work, name="wise-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"configured: policy_model={settings.policy_model} "
            f"mode={settings.mode or '(checkpoint manifest, else wise_s)'} "
            f"device={settings.device} dtype={settings.dtype} queue_size={settings.queue_size} "
            f"image_reliability={settings.image_reliability} "
            f"max_image_age_s={settings.max_image_age_s} command_wait_s={settings.command_wait_s}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        assert self.settings is not None
        started = time.perf_counter()
        self._load_error = ""
        self._loading_since = time.monotonic()
        self.get_logger().info(f"loading models ({self.settings.policy_model})")
        try:
            pipeline = self._pipeline_factory(self.settings)
        except Exception as exc:
            self._load_error = f"model loading failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self._load_error)
            return TransitionCallbackReturn.FAILURE
        finally:
            self._loading_since = None
        if self._stopping:  # SIGINT came during the load: the process is exiting
            with contextlib.suppress(Exception):
                pipeline.close()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"loaded: {_describe(pipeline)}")
        if self.settings.warmup:
            try:
                seconds = pipeline.warmup()
                self.get_logger().info(f"warm-up request served in {seconds:.2f} s")
            except Exception as exc:  # a failed warm-up costs speed, not service
                self.get_logger().warning(f"warm-up failed: {type(exc).__name__}: {exc}")
        with self._pipeline_lock:
            self._pipeline = pipeline
        self._image_sub = self.create_subscription(
            Image,
            "image",
            self._on_image,
            self._image_qos,
            callback_group=self._image_group,
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=self._on_incompatible_image_qos
            ),
        )
        self._active = True
        self.get_logger().info(f"active: models loaded in {time.perf_counter() - started:.1f} s")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._release_models()
        self.get_logger().info("inactive: models freed; commands get not_ready until activated")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release_models()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Free everything (idempotent): models, worker, publishers and subscriptions."""
        self._release_models()
        self._teardown()

    def stop_now(self) -> bool:
        """On SIGINT: stop at once, without waiting for a model load or a long inference.

        Queued commands are dropped (the ROS context is gone: no result could be sent) and
        the worker gets ``SHUTDOWN_WAIT_S`` to finish. Returns False when work is still
        running (a load, an inference); the caller then ends the process, which frees it.
        """
        self._stopping = True
        self._active = False
        jobs, worker = self._queue, self._worker
        if jobs is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    jobs.get_nowait()
            with contextlib.suppress(queue.Full):
                jobs.put_nowait(None)
        if worker is not None:
            worker.join(timeout=SHUTDOWN_WAIT_S)
        idle = self._loading_since is None and not (worker is not None and worker.is_alive())
        if idle:
            self.close()
        return idle

    def _release_models(self) -> None:
        self._active = False
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        with self._frame_cv:
            self._frame = None
            self._frame_cv.notify_all()
        with self._pipeline_lock:  # waits for a running inference to finish
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            try:
                pipeline.close()  # frees the models and gives their GPU memory back
            except Exception as exc:
                self.get_logger().error(f"pipeline.close() failed: {exc}")

    def _teardown(self) -> None:
        if self._worker is not None and self._queue is not None:
            self._queue.put(None)  # after the jobs already queued: each still gets its result
            self._worker.join(timeout=30.0)
        self._worker, self._queue = None, None
        if self._command_sub is not None:
            self.destroy_subscription(self._command_sub)
            self._command_sub = None
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}

    # ------------------------------------------------------------------ callbacks (executor threads)
    def _guarded(self, fn: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                self.get_logger().error(f"{fn.__name__} failed: {type(exc).__name__}: {exc}")

        return call

    def _on_image(self, msg: Image) -> None:
        try:
            error = ""
            try:
                rm.check_image(msg, int(self.settings.max_image_pixels) if self.settings else 0)
            except rm.ImageError as exc:
                error = str(exc)
                self.get_logger().warning(
                    f"invalid image (frame_id={msg.header.frame_id!r}): {error}",
                    throttle_duration_sec=5.0,
                )
            # An unusable frame still becomes the newest one: a command paired with it gets
            # invalid_image naming the problem, never a result computed on an older frame.
            with self._frame_cv:
                self._frame_seq += 1
                self._frame = _Frame(msg, self._frame_seq, time.monotonic(), error)
                self._frame_cv.notify_all()
            with self._stats_lock:
                self._stats.images += 1
                self._stats.invalid_images += bool(error)
        except Exception as exc:
            self.get_logger().error(f"image callback failed: {type(exc).__name__}: {exc}")

    def _on_incompatible_image_qos(self, info: QoSRequestedIncompatibleQoSInfo) -> None:
        # REP 2003 cameras publish reliable, but some publish best effort: say how to fix it.
        assert self.settings is not None
        self._image_qos_problem = (
            f"{info.total_count} publisher(s) on {self._image_topic()} offer a QoS this "
            f"subscription cannot accept (policy id {info.last_policy_kind}); with "
            f"image_reliability={self.settings.image_reliability} no frame arrives from them. "
            "A best_effort camera needs image_reliability: best_effort"
        )
        self.get_logger().error(self._image_qos_problem)

    def _on_command(self, msg: String) -> None:
        received = time.perf_counter()
        self._request_id += 1
        job = _Job(msg.data, self._request_id, received, None)
        try:
            self._accept(job)
        except Exception as exc:
            self.get_logger().error(f"command callback failed: {type(exc).__name__}: {exc}")
            self._fail(job, Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _accept(self, job: _Job) -> None:
        settings, jobs = self.settings, self._queue
        max_chars = int(settings.max_command_chars) if settings else MAX_COMMAND_CHARS
        command = rm.parse_command(job.command, max_chars)
        job.command, job.client_id = command.text, command.id
        if settings is None or jobs is None or not self._active:
            self._fail(job, Status.NOT_READY, self._not_ready_reason())
            return
        if command.error:
            self._fail(job, Status.INVALID_COMMAND, command.error)
            return
        job.frame = self._usable_frame()
        try:
            jobs.put_nowait(job)
        except queue.Full:
            self._fail(
                job,
                Status.QUEUE_FULL,
                f"rejected: {jobs.maxsize} command(s) already waiting (queue_size={jobs.maxsize})",
                job.frame,
            )

    def _not_ready_reason(self) -> str:
        since = self._loading_since
        if since is not None:
            return (
                f"models are loading ({time.monotonic() - since:.0f} s so far); "
                "commands are served once the node is active"
            )
        label = self._state_machine.current_state[1]
        reason = f"node is {label}, models are not loaded; activate it through the lifecycle"
        return f"{reason} ({self._load_error})" if self._load_error else reason

    # ------------------------------------------------------------------ pairing
    def _frame_age(self, frame: _Frame) -> float:
        stamp = frame.msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:  # unstamped: age since receipt
            return time.monotonic() - frame.received
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e9

    def _usable_frame(self) -> _Frame | None:
        with self._frame_cv:
            frame = self._frame
        if frame is None or self.settings is None:
            return None
        return frame if self._frame_age(frame) <= float(self.settings.max_image_age_s) else None

    def _wait_for_frame(self, deadline: float) -> _Frame | None:
        """A usable frame, waiting until ``deadline`` (time.perf_counter()) for a fresh one."""
        while True:
            frame = self._usable_frame()
            if frame is not None or not self._active:
                return frame
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            with self._frame_cv:
                self._frame_cv.wait(timeout=min(remaining, 0.05))

    def _no_image_reason(self) -> str:
        assert self.settings is not None
        with self._frame_cv:
            frame = self._frame
        waited = f"within command_wait_s={self.settings.command_wait_s}"
        if frame is None:
            return f"no image received on {self._image_topic()} {waited}"
        return (
            f"newest image is stale: {self._frame_age(frame):.3f} s old > "
            f"max_image_age_s={self.settings.max_image_age_s} (no fresh image {waited})"
        )

    def _image_topic(self) -> str:
        return self._image_sub.topic_name if self._image_sub is not None else "image"

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        jobs = self._queue
        assert jobs is not None
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception as exc:
                if self._stopping:
                    return
                self.get_logger().error(
                    f"request {job.request_id} failed: {type(exc).__name__}: {exc}"
                )
                with contextlib.suppress(Exception):
                    self._fail(job, Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _run(self, job: _Job) -> None:
        assert self.settings is not None
        started = time.perf_counter()
        timing = {"queue_wait_ms": (started - job.received) * 1e3}
        frame = job.frame
        if frame is None:
            frame = self._wait_for_frame(job.received + float(self.settings.command_wait_s))
            timing["image_wait_ms"] = (time.perf_counter() - started) * 1e3
        if frame is None:
            status = Status.NO_IMAGE if self._active else Status.NOT_READY
            reason = self._no_image_reason() if self._active else self._not_ready_reason()
            self._fail(job, status, reason, None, timing)
            return
        if frame.error:
            self._fail(job, Status.INVALID_IMAGE, frame.error, frame, timing)
            return
        timing["image_age_ms"] = self._frame_age(frame) * 1e3
        try:  # validated at receipt (frame.error): only converted here
            rgb = rm.image_to_rgb(frame.msg, validate=False)
        except (rm.ImageError, ValueError) as exc:
            self._fail(job, Status.INVALID_IMAGE, str(exc), frame, timing)
            return
        with self._pipeline_lock:
            if self._pipeline is None:
                result = Result.failure(job.command, Status.NOT_READY, self._not_ready_reason())
            else:
                t0 = time.perf_counter()
                result = self._pipeline.segment(rgb, job.command, frame_key=frame.key)
                timing["pipeline_ms"] = (time.perf_counter() - t0) * 1e3
        self._publish(result, job, frame.msg.header, timing, rgb)

    # ------------------------------------------------------------------ publishing
    def _fail(
        self,
        job: _Job,
        status: Status,
        error: str,
        frame: _Frame | None = None,
        timing: dict[str, float] | None = None,
    ) -> None:
        """Publish an error result (header of ``frame``, or node clock + empty frame_id)."""
        self.get_logger().warning(
            f"request {job.request_id} (id={job.client_id!r}) {status.value}: {error}",
            throttle_duration_sec=1.0,
        )
        header = frame.msg.header if frame is not None else self._clock_header()
        self._publish(Result.failure(job.command, status, error), job, header, timing or {}, None)

    def _clock_header(self) -> Header:
        return rm.header_of(self.get_clock().now().to_msg(), "")

    def _publish(
        self,
        result: Result,
        job: _Job,
        header: Header,
        timing: dict[str, float],
        rgb: np.ndarray | None,
    ) -> None:
        if self._stopping or not self.context.ok():
            return  # SIGINT: the ROS context is (being) shut down, nothing can be sent
        pubs = self._pubs
        if result.ok:
            if result.mask is not None:
                pubs["mask"].publish(rm.mask_to_image(result.mask, header))
            pubs["rationale"].publish(String(data=result.rationale))
            if "overlay" in pubs and rgb is not None:
                # the one picture of a result, the CLI's too
                pubs["overlay"].publish(rm.numpy_to_image(overlay(rgb, result), "rgb8", header))
            if "detections" in pubs:
                pubs["detections"].publish(rm.result_to_detections(result, header))
        elapsed_ms = (time.perf_counter() - job.received) * 1e3
        waits = sum(timing.get(k, 0.0) for k in ("queue_wait_ms", "image_wait_ms", "pipeline_ms"))
        node_info = {
            "request_id": job.request_id,
            **{k: round(v, 3) for k, v in timing.items()},
            "node_overhead_ms": round(max(elapsed_ms - waits, 0.0), 3),
            "latency_ms": round(elapsed_ms, 3),
        }
        if "result" in pubs:
            pubs["result"].publish(rm.result_to_string(result, header, node_info, job.client_id))
        with self._stats_lock:
            self._stats.counts[result.status.value] += 1
            self._stats.last_status = result.status.value
            self._stats.last_latency_ms = round(elapsed_ms, 3)

    def _models_state(self) -> str:
        if self._loading_since is not None:
            return "loading"
        if self._active:
            return "loaded"
        return "failed" if self._load_error else "not loaded"

    def _publish_diagnostics(self) -> None:
        label = self._state_machine.current_state[1]
        models = self._models_state()
        with self._stats_lock:
            counts = dict(self._stats.counts)
            values: dict[str, Any] = {
                "state": label,
                "models": models,
                "queue_depth": self._queue.qsize() if self._queue is not None else 0,
                "queue_size": self._queue.maxsize if self._queue is not None else 0,
                "last_latency_ms": self._stats.last_latency_ms,
                "last_status": self._stats.last_status,
                "ok": counts.get(Status.OK.value, 0),
                "errors": sum(n for s, n in counts.items() if s != Status.OK.value),
                "counts": counts,
                "images": self._stats.images,
                "invalid_images": self._stats.invalid_images,
            }
        with self._frame_cv:
            frame = self._frame
        # The newest frame's frame_id: what the next command will be paired with.
        values["newest_frame"] = frame.msg.header.frame_id if frame is not None else ""
        since = self._loading_since
        if since is not None:
            level = DiagnosticStatus.WARN
            message = f"loading models ({time.monotonic() - since:.0f} s so far)"
            values["loading_s"] = round(time.monotonic() - since, 1)
        elif self._load_error:
            level, message = DiagnosticStatus.ERROR, self._load_error
        elif self._active and self._image_qos_problem:
            level, message = DiagnosticStatus.WARN, self._image_qos_problem
        elif self._active:
            level, message = DiagnosticStatus.OK, "active"
        else:
            level, message = DiagnosticStatus.WARN, f"{label}: models not loaded"
        stamp: Time = self.get_clock().now().to_msg()
        self._diag_pub.publish(
            rm.diagnostics_message(
                stamp,
                f"{self.get_name()}: segmentation",
                self.get_fully_qualified_name(),
                level,
                message,
                values,
            )
        )


def _describe(pipeline: Pipeline) -> str:
    """What was loaded, resolved (policy, segmenter, mode, device, dtype), for the log."""
    describe = getattr(pipeline, "describe", None)
    if describe is None:
        return type(pipeline).__name__
    info = describe()
    parts = []
    for role in ("policy", "segmenter"):
        part = info.get(role) or {}
        parts.append(
            f"{role}={part.get('name', '')} ({part.get('backend', '')}, "
            f"device={part.get('device', '')}, dtype={part.get('dtype', '')})"
        )
    extras = " ".join(f"{k}={info[k]}" for k in ("mode", "brevity", "max_new_tokens") if k in info)
    return " ".join([*parts, extras])


def main(args: list[str] | None = None, pipeline_factory: PipelineFactory | None = None) -> int:
    """Entry point of ``wise-perception-node`` / ``python -m wise_perception.node``."""
    rclpy.init(args=args)  # its SIGINT handler shuts the context down; spin() then returns
    node = WisePerceptionNode(pipeline_factory=pipeline_factory)
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    if bool(node.get_parameter("autostart").value):
        # The executor spins while the models load, so the node answers from the start.
        threading.Thread(target=node.autostart, name="wise-autostart", daemon=True).start()
    idle = True
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        idle = node.stop_now()
        idle = executor.shutdown(timeout_sec=0, wait_for_threads=False) and idle
        if idle:
            node.destroy_node()
        rclpy.try_shutdown()
    if not idle:
        # A load or an inference cannot be interrupted, and the interpreter would wait for it
        # at exit (it joins executor and pool threads): end the process, which frees it.
        # Written to stderr: the ROS logger would also publish to /rosout, whose context is gone.
        print(
            f"[{node.get_name()}] exiting with a model load or an inference still running",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
