"""The WISE perception lifecycle node: camera image + spoken command in, mask + rationale out.

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

Topic names are relative (``-r __ns:=/wise`` puts them under ``/wise``). Every output carries
the header of the image it was computed on; a result with no image (no_image, not_ready,
queue_full, invalid_command before pairing) carries the node clock and an empty ``frame_id``.

The node holds the lifecycle, the callbacks and the publishing; the rest has its own module:
parameters (:mod:`.settings`), the newest frame (:mod:`..inputs.frame_slot`), the bounded
command queue (:mod:`.command_queue`), encoding ahead (:mod:`.encode_ahead`), loading the
models (:mod:`.models`) and the messages (:mod:`.messages`). The models live in the
pipeline; the node never imports torch.

Lifecycle: parameters are declared on construction and read on configure (which also creates
the publishers, the command subscription and the worker thread); activate loads the models
and subscribes to images; deactivate unsubscribes and frees the models (and GPU memory);
cleanup stops the worker. While configured but inactive, commands are answered ``not_ready``.
With ``autostart`` (default) the node configures and activates itself. Loading never makes
the node deaf: the lifecycle services, commands, images and diagnostics each have their own
callback group on a multi-threaded executor, and autostart runs the transitions on a thread
of their own; SIGINT ends the process at once, whatever is loading or running.

A command's way: parsed and checked once on receipt (``invalid_command`` at once); paired
with the newest frame at most ``max_image_age_s`` old, or waits up to ``command_wait_s`` for
one (``no_image``); queued (``queue_full`` at once when ``queue_size`` already wait); served
by one worker thread, which hands the pipeline the checked command and the frame converted
once; published. An invalid newest frame answers ``invalid_image`` naming its problem.

With ``encode_ahead``, the worker starts SAM2's encoding of the newest usable frame whenever
no command waits: one encoding at a time, each frame once, never while a command is served
and never waited for, so a command on that frame finds its encoding done or in flight.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from ..core.limits import MAX_COMMAND_CHARS
from ..inputs.frame_slot import Frame, FrameSlot
from ..result import Result, Status
from . import messages as rm
from . import models
from .command_queue import CommandQueue
from .encode_ahead import EncodeAhead
from .models import NodePipeline, PipelineFactory
from .settings import PARAMETERS, Settings, descriptor, reliable

NODE_NAME = "wise_perception"
# Executor threads: one can sit in a lifecycle transition (a model load) while commands,
# images and diagnostics, each in its own callback group, keep theirs.
EXECUTOR_THREADS = 4
# How long SIGINT waits for the inference worker before the process exits regardless.
SHUTDOWN_WAIT_S = 0.5


@dataclass
class _Job:
    command: rm.Command
    request_id: int
    received: float  # time.perf_counter() when the command callback started
    frame: Frame | None = None


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
        self._pipeline_factory = pipeline_factory or models.load
        for parameter in PARAMETERS:
            self.declare_parameter(parameter.name, parameter.default, descriptor(parameter))
        self.settings: Settings | None = None
        self._pipeline: NodePipeline | None = None
        self._pipeline_lock = threading.Lock()  # held by the worker while it uses the pipeline
        self._load_error = ""
        self._loading_since: float | None = None  # time.monotonic() while models load
        self._stopping = False  # set on SIGINT: nothing more is published
        self._image_qos_problem = ""  # a camera whose QoS this subscription cannot match
        self._active = False
        self._frames = FrameSlot(lambda: self.get_clock().now().nanoseconds)
        self._queue: CommandQueue[_Job] | None = None
        self._worker: threading.Thread | None = None
        self._request_id = 0
        self._stats = _Stats()
        self._stats_lock = threading.Lock()
        self._pubs: dict[str, Publisher] = {}
        self._command_sub: Subscription | None = None
        self._image_sub: Subscription | None = None
        self._command_group = MutuallyExclusiveCallbackGroup()
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._encode_ahead = False  # resolved on activate (parameter encode_ahead)
        self._ahead = EncodeAhead(wake=self._wake_worker)
        # Diagnostics exist in every state, so a monitor sees an unconfigured node too.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self.get_parameter("diagnostics_period_s").value,
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
            values = {p.name: self.get_parameter(p.name).value for p in PARAMETERS}
            settings = Settings.from_parameters(values)
        except ValueError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.settings = settings
        outputs = reliable(settings.output_depth)
        self._pubs = {
            "result": self.create_publisher(String, "result", reliable(settings.result_depth)),
            "mask": self.create_publisher(Image, "mask", outputs),
            "rationale": self.create_publisher(String, "rationale", outputs),
        }
        if settings.use_overlay:
            self._pubs["overlay"] = self.create_publisher(Image, "overlay", outputs)
        if rm.HAVE_VISION_MSGS:
            self._pubs["detections"] = self.create_publisher(
                rm.Detection2DArray, "detections", outputs
            )
        self._command_sub = self.create_subscription(
            String,
            "command",
            self._on_command,
            reliable(settings.command_depth),
            callback_group=self._command_group,
        )
        self._queue = CommandQueue(settings.queue_size)
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
        settings = self.settings
        assert settings is not None
        started = time.perf_counter()
        self._load_error = ""
        self._loading_since = time.monotonic()
        self.get_logger().info(f"loading models ({settings.policy_model})")
        try:
            pipeline = self._pipeline_factory(settings)
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
        self.get_logger().info(f"loaded: {models.summary(pipeline)}")
        if settings.warmup:
            try:
                seconds = pipeline.warmup()
                self.get_logger().info(f"warm-up request served in {seconds:.2f} s")
            except Exception as exc:  # a failed warm-up costs speed, not service
                self.get_logger().warning(f"warm-up failed: {type(exc).__name__}: {exc}")
        self._encode_ahead = models.encodes_ahead(settings, pipeline)
        with self._pipeline_lock:
            self._pipeline = pipeline
        self._image_sub = self.create_subscription(
            Image,
            "image",
            self._on_image,
            settings.image_qos(),
            callback_group=self._image_group,
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=self._on_incompatible_image_qos
            ),
        )
        self._active = True
        self.get_logger().info(
            f"active: models loaded in {time.perf_counter() - started:.1f} s; "
            f"encode_ahead={'on' if self._encode_ahead else 'off'} ({settings.encode_ahead})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._release_models()
        self.get_logger().info("inactive: models freed; commands get not_ready until activated")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.close()
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
        if self._queue is not None:
            self._queue.close(drop_waiting=True)
        worker = self._worker
        if worker is not None:
            worker.join(timeout=SHUTDOWN_WAIT_S)
        idle = self._loading_since is None and not (worker is not None and worker.is_alive())
        if idle:
            self.close()
        return idle

    def _release_models(self) -> None:
        self._active = False
        self._encode_ahead = False
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        self._frames.clear()
        with self._pipeline_lock:  # waits for a running inference to finish
            pipeline, self._pipeline = self._pipeline, None
            self._ahead.forget()
        if pipeline is not None:
            try:
                pipeline.close()  # frees the models and gives their GPU memory back
            except Exception as exc:
                self.get_logger().error(f"pipeline.close() failed: {exc}")

    def _teardown(self) -> None:
        if self._worker is not None and self._queue is not None:
            self._queue.close()  # after the commands already queued: each gets its result
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
            settings = self.settings
            frame = self._frames.put(msg, settings.max_image_pixels if settings else 0)
            if frame.error:
                self.get_logger().warning(
                    f"invalid image (frame_id={frame.frame_id!r}): {frame.error}",
                    throttle_duration_sec=5.0,
                )
            with self._stats_lock:
                self._stats.images += 1
                self._stats.invalid_images += bool(frame.error)
            if self._encode_ahead:
                self._wake_worker()  # a new frame to encode while idle
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
        job = _Job(rm.Command(msg.data), self._request_id, received)
        try:
            settings = self.settings
            max_chars = settings.max_command_chars if settings else MAX_COMMAND_CHARS
            job.command = rm.parse_command(msg.data, max_chars)
            self._accept(job)
        except Exception as exc:
            self.get_logger().error(f"command callback failed: {type(exc).__name__}: {exc}")
            self._fail(job, Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _accept(self, job: _Job) -> None:
        settings, jobs = self.settings, self._queue
        if settings is None or jobs is None or not self._active:
            self._fail(job, Status.NOT_READY, self._not_ready_reason())
            return
        if job.command.question is None:
            self._fail(job, Status.INVALID_COMMAND, job.command.error)
            return
        job.frame = self._frames.usable(settings.max_image_age_s)
        if not jobs.offer(job):
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

    def _image_topic(self) -> str:
        return self._image_sub.topic_name if self._image_sub is not None else "image"

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        jobs = self._queue
        assert jobs is not None
        encode_ahead = self._guarded(self._encode_newest_ahead)
        while (job := jobs.take(idle=encode_ahead)) is not None:
            try:
                self._serve(job)
            except Exception as exc:
                if self._stopping:
                    return
                self.get_logger().error(
                    f"request {job.request_id} failed: {type(exc).__name__}: {exc}"
                )
                with contextlib.suppress(Exception):
                    self._fail(job, Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _serve(self, job: _Job) -> None:
        settings, question = self.settings, job.command.question
        assert settings is not None and question is not None
        started = time.perf_counter()
        timing = {"queue_wait_ms": (started - job.received) * 1e3}
        frame = job.frame
        if frame is None:
            deadline = job.received + settings.command_wait_s
            frame = self._frames.wait_usable(
                settings.max_image_age_s, deadline, lambda: self._active
            )
            timing["image_wait_ms"] = (time.perf_counter() - started) * 1e3
        if frame is None and self._active:
            reason = self._frames.why_none_usable(
                self._image_topic(), settings.max_image_age_s, settings.command_wait_s
            )
            self._fail(job, Status.NO_IMAGE, reason, None, timing)
            return
        if frame is None:
            self._fail(job, Status.NOT_READY, self._not_ready_reason(), None, timing)
            return
        if frame.error:  # found at receipt
            self._fail(job, Status.INVALID_IMAGE, frame.error, frame, timing)
            return
        timing["image_age_ms"] = self._frames.age(frame) * 1e3
        try:  # checked at receipt; converted once, here or by the encoding ahead
            image = frame.image()
        except ValueError as exc:
            self._fail(job, Status.INVALID_IMAGE, str(exc), frame, timing)
            return
        with self._pipeline_lock:
            if self._pipeline is None:
                result = Result.failure(
                    job.command.text, Status.NOT_READY, self._not_ready_reason()
                )
            else:
                frame.encoding_started = True  # by the command: nothing to start ahead
                t0 = time.perf_counter()
                result = self._pipeline.segment(image, question, frame_key=frame.key)
                timing["pipeline_ms"] = (time.perf_counter() - t0) * 1e3
        self._publish(result, job, frame.msg.header, timing, image.pixels)

    def _encode_newest_ahead(self) -> None:
        """The worker's idle work: start SAM2 on the newest usable frame (:mod:`.encode_ahead`)."""
        settings = self.settings
        if not self._encode_ahead or settings is None:
            return
        frame = self._frames.usable(settings.max_image_age_s)
        if frame is None or not self._ahead.wants(frame):
            return
        with self._pipeline_lock:
            if self._pipeline is not None:
                self._ahead.start(frame, self._pipeline)

    def _wake_worker(self) -> None:
        jobs = self._queue
        if jobs is not None:
            jobs.poke()

    # ------------------------------------------------------------------ publishing
    def _fail(
        self,
        job: _Job,
        status: Status,
        error: str,
        frame: Frame | None = None,
        timing: dict[str, float] | None = None,
    ) -> None:
        """Publish an error result (header of ``frame``, or node clock + empty frame_id)."""
        self.get_logger().warning(
            f"request {job.request_id} (id={job.command.id!r}) {status.value}: {error}",
            throttle_duration_sec=1.0,
        )
        header = frame.msg.header if frame is not None else self._clock_header()
        failure = Result.failure(job.command.text, status, error)
        self._publish(failure, job, header, timing or {}, None)

    def _clock_header(self) -> Header:
        return rm.header_of(self.get_clock().now().to_msg(), "")

    def _publish(
        self,
        result: Result,
        job: _Job,
        header: Header,
        timing: dict[str, float],
        image: np.ndarray | None,
    ) -> None:
        if self._stopping or not self.context.ok():
            return  # SIGINT: the ROS context is (being) shut down, nothing can be sent
        pubs = self._pubs
        overlay_on = image if "overlay" in pubs else None
        for topic, msg in rm.success_messages(result, header, overlay_on=overlay_on).items():
            if topic in pubs:
                pubs[topic].publish(msg)
        elapsed_ms = (time.perf_counter() - job.received) * 1e3
        waits = sum(timing.get(k, 0.0) for k in ("queue_wait_ms", "image_wait_ms", "pipeline_ms"))
        node_info = {
            "request_id": job.request_id,
            **{k: round(v, 3) for k, v in timing.items()},
            "node_overhead_ms": round(max(elapsed_ms - waits, 0.0), 3),
            "latency_ms": round(elapsed_ms, 3),
        }
        if "result" in pubs:
            pubs["result"].publish(rm.result_to_string(result, header, node_info, job.command.id))
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
        jobs, pipeline, frame = self._queue, self._pipeline, self._frames.newest()
        with self._stats_lock:
            counts = dict(self._stats.counts)
            values: dict[str, Any] = {
                "state": label,
                "models": self._models_state(),
                "queue_depth": len(jobs) if jobs is not None else 0,
                "queue_size": jobs.maxsize if jobs is not None else 0,
                "last_latency_ms": self._stats.last_latency_ms,
                "last_status": self._stats.last_status,
                "ok": counts.get(Status.OK.value, 0),
                "errors": sum(n for s, n in counts.items() if s != Status.OK.value),
                "counts": counts,
                "images": self._stats.images,
                "invalid_images": self._stats.invalid_images,
            }
        # The newest frame's frame_id: what the next command will be paired with.
        values["newest_frame"] = frame.frame_id if frame is not None else ""
        values["encode_ahead"] = "on" if self._encode_ahead else "off"
        values["encoded_ahead"] = self._ahead.encoded  # the last frame encoded ahead
        if pipeline is not None:  # reuse of SAM2 encodings: hits, misses, size, capacity
            values["encode_cache"] = pipeline.cache_info()
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
        self._diag_pub.publish(
            rm.diagnostics_message(
                self.get_clock().now().to_msg(),
                f"{self.get_name()}: segmentation",
                self.get_fully_qualified_name(),
                level,
                message,
                values,
            )
        )


def main(args: list[str] | None = None, pipeline_factory: PipelineFactory | None = None) -> int:
    """Entry point of ``wise-perception-node`` / ``python -m wise_perception.node``."""
    rclpy.init(args=args)  # its SIGINT handler shuts the context down; spin() then returns
    node = WisePerceptionNode(pipeline_factory=pipeline_factory)
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    if node.get_parameter("autostart").value:
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
