"""The WISE perception lifecycle node: camera image + spoken command in, mask + rationale out.

The node only converts messages, pairs commands with frames, queues, publishes and reports;
the models live in :class:`wise_perception.pipeline.WisePipeline`.

Topics (relative names, so ``-r __ns:=/wise`` puts them under ``/wise``):

============== ===== ================================ =======================================
topic          dir   type                             when
============== ===== ================================ =======================================
image          in    sensor_msgs/Image                while active (QoS: ``image_*`` params)
command        in    std_msgs/String                  while configured (reliable)
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
import gc
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
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
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
from .core.manifest import DEFAULT_POLICY
from .core.prompts import DEFAULT_BREVITY, MAX_QUESTION_CHARS, PromptMode, normalize_question
from .result import Result, Status

NODE_NAME = "wise_perception"


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
    Param("image_reliability", "best_effort", "image QoS reliability: best_effort | reliable"),
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
    Param("max_image_pixels", 3840 * 2160, "larger images are rejected (0 = no limit)"),
    Param("max_command_chars", MAX_QUESTION_CHARS, "longer commands are rejected"),
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


PipelineFactory = Callable[[Settings], Pipeline]


def load_pipeline(settings: Settings) -> Pipeline:
    """The production factory: imports torch and the models only when the node activates.

    Empty ``segmenter_model`` and ``max_new_tokens: 0`` mean "the checkpoint's manifest, else
    the pipeline's default" (an exported WISE checkpoint names its segmenter and budget).
    """
    from .pipeline import WisePipeline

    if not settings.policy_model:
        raise ValueError("parameter policy_model must name a checkpoint folder or model id")
    max_pixels = int(settings.max_image_pixels)
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
        **({"max_image_pixels": max_pixels} if max_pixels > 0 else {}),
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


@dataclass
class _Stats:
    counts: Counter[str] = field(default_factory=Counter)
    images: int = 0
    invalid_images: int = 0
    last_status: str = ""
    last_latency_ms: float = 0.0


class WisePerceptionNode(LifecycleNode):
    def __init__(self, pipeline_factory: PipelineFactory | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._pipeline_factory = pipeline_factory or load_pipeline
        for p in PARAMETERS:
            self.declare_parameter(p.name, p.default)
        self.settings: Settings | None = None
        self._pipeline: Pipeline | None = None
        self._pipeline_lock = threading.Lock()  # held by the worker during inference
        self._load_error = ""
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
        # Diagnostics exist in every state, so a monitor sees an unconfigured node too.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(self.get_parameter("diagnostics_period_s").value)
        self._diag_timer = self.create_timer(
            max(period, 0.05), self._guarded(self._publish_diagnostics)
        )

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            settings = Settings({name: self.get_parameter(name).value for name in PARAMETER_NAMES})
            if settings.mode:
                PromptMode(settings.mode)
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
        self._command_sub = self.create_subscription(String, "command", self._on_command, cmd_qos)
        self._queue = queue.Queue(maxsize=max(int(settings.queue_size), 1))
        self._worker = threading.Thread(target=self._work, name="wise-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"configured: mode={settings.mode} queue_size={settings.queue_size} "
            f"max_image_age_s={settings.max_image_age_s} command_wait_s={settings.command_wait_s}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        assert self.settings is not None
        started = time.perf_counter()
        try:
            pipeline = self._pipeline_factory(self.settings)
        except Exception as exc:
            self._load_error = f"model loading failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self._load_error)
            return TransitionCallbackReturn.FAILURE
        if self.settings.warmup:
            try:
                seconds = pipeline.warmup()
                self.get_logger().info(f"warm-up request served in {seconds:.2f} s")
            except Exception as exc:  # a failed warm-up costs speed, not service
                self.get_logger().warning(f"warm-up failed: {type(exc).__name__}: {exc}")
        with self._pipeline_lock:
            self._pipeline = pipeline
        self._load_error = ""
        self._image_sub = self.create_subscription(Image, "image", self._on_image, self._image_qos)
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
                pipeline.close()
            except Exception as exc:
                self.get_logger().error(f"pipeline.close() failed: {exc}")
            del pipeline
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

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

    # ------------------------------------------------------------------ callbacks (executor thread)
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
            with self._frame_cv:
                self._frame_seq += 1
                self._frame = _Frame(msg, self._frame_seq, time.monotonic(), error)
                self._frame_cv.notify_all()
            with self._stats_lock:
                self._stats.images += 1
                self._stats.invalid_images += bool(error)
        except Exception as exc:
            self.get_logger().error(f"image callback failed: {type(exc).__name__}: {exc}")

    def _on_command(self, msg: String) -> None:
        received = time.perf_counter()
        self._request_id += 1
        request_id = self._request_id
        command = msg.data
        try:
            self._accept(command, request_id, received)
        except Exception as exc:
            self.get_logger().error(f"command callback failed: {type(exc).__name__}: {exc}")
            self._fail(
                command, Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", request_id, received
            )

    def _accept(self, command: str, request_id: int, received: float) -> None:
        settings, jobs = self.settings, self._queue
        if settings is None or jobs is None or not self._active:
            self._fail(command, Status.NOT_READY, self._not_ready_reason(), request_id, received)
            return
        try:
            normalize_question(command, int(settings.max_command_chars))
        except ValueError as exc:
            self._fail(command, Status.INVALID_COMMAND, str(exc), request_id, received)
            return
        job = _Job(command, request_id, received, self._usable_frame())
        try:
            jobs.put_nowait(job)
        except queue.Full:
            self._fail(
                command,
                Status.QUEUE_FULL,
                f"rejected: {jobs.maxsize} command(s) already waiting (queue_size={jobs.maxsize})",
                request_id,
                received,
                job.frame,
            )

    def _not_ready_reason(self) -> str:
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
                self.get_logger().error(
                    f"request {job.request_id} failed: {type(exc).__name__}: {exc}"
                )
                with contextlib.suppress(Exception):
                    self._fail(
                        job.command,
                        Status.INTERNAL_ERROR,
                        f"{type(exc).__name__}: {exc}",
                        job.request_id,
                        job.received,
                        job.frame,
                    )

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
            self._fail(job.command, status, reason, job.request_id, job.received, None, timing)
            return
        if frame.error:
            self._fail(
                job.command,
                Status.INVALID_IMAGE,
                frame.error,
                job.request_id,
                job.received,
                frame,
                timing,
            )
            return
        timing["image_age_ms"] = self._frame_age(frame) * 1e3
        try:
            rgb = rm.image_to_rgb(frame.msg, int(self.settings.max_image_pixels))
        except rm.ImageError as exc:
            self._fail(
                job.command,
                Status.INVALID_IMAGE,
                str(exc),
                job.request_id,
                job.received,
                frame,
                timing,
            )
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
        command: str,
        status: Status,
        error: str,
        request_id: int,
        received: float,
        frame: _Frame | None = None,
        timing: dict[str, float] | None = None,
    ) -> None:
        """Publish an error result (header of ``frame``, or node clock + empty frame_id)."""
        self.get_logger().warning(
            f"request {request_id} {status.value}: {error}", throttle_duration_sec=1.0
        )
        header = frame.msg.header if frame is not None else self._clock_header()
        job = _Job(command, request_id, received, frame)
        self._publish(Result.failure(command, status, error), job, header, timing or {}, None)

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
        pubs = self._pubs
        if result.ok:
            if result.mask is not None:
                pubs["mask"].publish(rm.mask_to_image(result.mask, header))
            pubs["rationale"].publish(String(data=result.rationale))
            if "overlay" in pubs and rgb is not None:
                pubs["overlay"].publish(
                    rm.numpy_to_image(rm.overlay_image(rgb, result), "rgb8", header)
                )
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
            pubs["result"].publish(rm.result_to_string(result, header, node_info))
        with self._stats_lock:
            self._stats.counts[result.status.value] += 1
            self._stats.last_status = result.status.value
            self._stats.last_latency_ms = round(elapsed_ms, 3)

    def _publish_diagnostics(self) -> None:
        label = self._state_machine.current_state[1]
        with self._stats_lock:
            counts = dict(self._stats.counts)
            values: dict[str, Any] = {
                "state": label,
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
        if self._load_error:
            level, message = DiagnosticStatus.ERROR, self._load_error
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


def main(args: list[str] | None = None, pipeline_factory: PipelineFactory | None = None) -> int:
    """Entry point of ``wise-perception-node`` / ``python -m wise_perception.node``."""
    rclpy.init(args=args)
    node = WisePerceptionNode(pipeline_factory=pipeline_factory)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # As yolo_ros does: configure + activate once, before spinning.
        autostart = bool(node.get_parameter("autostart").value)
        if autostart and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
