"""The WISE perception lifecycle node: camera image + spoken command in, mask + rationale out.

Topics: the table of :data:`.usage.TOPICS` (``wise-perception-node --help`` prints it, with
the parameters). Topic names are relative (``-r __ns:=/wise`` puts them under ``/wise``). Every output carries
the header of the image it was computed on; a result with no image (no_image, not_ready,
queue_full, invalid_command before pairing) carries the node clock and an empty ``frame_id``.

The node holds the lifecycle, the callbacks and the publishing; the rest has its own module:
parameters (:mod:`.settings`), its state (:mod:`.state`), the newest frame
(:mod:`..inputs.frame_slot`, shared with the bag replay), the image QoS (:mod:`.image_qos`), the
bounded command queue (:mod:`.command_queue`), encoding ahead (:mod:`.encode_ahead`), loading the
models (:mod:`.models`), the messages (:mod:`.messages`) and ``--help`` (:mod:`.usage`). The models live in the
pipeline; the node never imports torch.

Lifecycle: parameters are declared on construction and read on configure (which also creates
the output publishers and the worker thread); activate loads the models and subscribes to
images; deactivate unsubscribes and frees the models (and GPU memory); cleanup stops the
worker. The command subscription and the result publisher exist from construction (their
depths are read-only parameters), so a command is answered exactly once in every state:
``not_ready`` with why, unless the node is active. Where the node stands is kept in one place,
:class:`.state.NodeState`, updated by the transition callbacks.

A transition never fails silently and never leaves a model loaded: its failure is logged,
reported on ``/diagnostics`` and in every later ``not_ready``, and what it loaded is closed.
Describing the models or warming them up never fails an activation: a policy server that is
down at start still lets the node activate; each command then gets ``policy_unavailable``
until the server is back (no restart). With ``autostart`` (default) the node configures and
activates itself; with ``exit_on_autostart_failure`` (``make run``) a failure of either ends
the process with status 1 instead. Loading never makes the node deaf: the lifecycle services,
commands, images and diagnostics each have their own callback group on a multi-threaded
executor, and autostart runs the transitions on a thread of their own; SIGINT ends the
process at once, whatever is loading or running.

A command's way: parsed and checked once on receipt (``invalid_command`` at once); paired
with the newest frame at most ``max_image_age_s`` old, or waits up to ``command_wait_s`` for
one (``no_image``); queued (``queue_full`` at once when ``queue_size`` already wait); served
by one worker thread, which hands the pipeline the checked command and the frame converted
once; published. An invalid newest frame answers ``invalid_image`` naming its problem.

With ``encode_ahead``, the worker starts SAM2's encoding of the newest usable frame whenever
no command waits: one encoding at a time, each frame once, never while a command is served
and never waited for, so a command on that frame finds its encoding done or in flight.

Reason once, then track: a command that asks (``"track": true``, or ``track_default``) is
followed after its result by SAM2's video memory (:mod:`wise_perception.tracking`), as the
worker's idle work: each time the newest frame that came after the last one tracked (the ones
in between are skipped and counted), its mask on ``mask`` and its JSON on ``track``, both with
that frame's header. The rules are ROS-free (:mod:`wise_perception.command_track`, shared with
the bag replay); the node locks, publishes and logs. The policy does not run while tracking. The
track ends when the next command is served (``preempted``), on ``{"stop": true}``
(``stopped``; the stop gets its own ``stopped`` result), on loss (``lost``: the score below
``track_score_threshold`` for ``track_lost_after`` frames; with ``reground_on_loss`` the
policy is asked again on that frame and its new answer tracked, published on ``track`` and
``mask``, never as a second result), on ``track_timeout_s``, or when the models are released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
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
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import ReliabilityPolicy
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from ..command_track import ENDED, CommandTracking, TrackOutput, not_started
from ..core.limits import MAX_COMMAND_CHARS
from ..inputs.frame_slot import Frame, FrameSlot
from ..result import Result, Status
from ..tracking import TrackState
from ..visualize import track_overlay
from . import image_qos, models
from . import messages as rm
from .command_queue import CommandQueue
from .encode_ahead import EncodeAhead
from .models import NodePipeline, PipelineFactory
from .settings import PARAMETERS, Settings, descriptor, reliable
from .state import ERROR, OK, WARN, NodeState
from .usage import usage, wants_help

NODE_NAME = "wise_perception"
# Executor threads: one can sit in a lifecycle transition (a model load) while commands,
# images and diagnostics, each in its own callback group, keep theirs.
EXECUTOR_THREADS = 4
# How long SIGINT waits for the inference worker before the process exits regardless.
SHUTDOWN_WAIT_S = 0.5
# Exit status of a node whose autostart failed with exit_on_autostart_failure.
EXIT_AUTOSTART_FAILED = 1
_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}
# Results whose status shows the policy answered (or could not be reached).
_POLICY_ANSWERED = (Status.OK, Status.UNPARSABLE_ANSWER)


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
        self.exit_status = 0  # main()'s: EXIT_AUTOSTART_FAILED when autostart ends the process
        self._state = NodeState()
        self._pipeline: NodePipeline | None = None
        self._pipeline_lock = threading.Lock()  # held by the worker while it uses the pipeline
        self._frames = FrameSlot(lambda: self.get_clock().now().nanoseconds)
        self._queue: CommandQueue[_Job] | None = None
        self._worker: threading.Thread | None = None
        self._request_id = 0
        self._stats = _Stats()
        self._stats_lock = threading.Lock()
        self._outputs: dict[str, Publisher] = {}  # mask, rationale, overlay, detections
        self._image_sub: Subscription | None = None
        self._image_reliability = ReliabilityPolicy.RELIABLE  # of the image subscription
        self._image_recheck: Timer | None = None  # while active: re-checks the image QoS
        self._image_lock = threading.Lock()  # the image subscription and its re-check timer
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._encode_ahead = False  # resolved on activate (parameter encode_ahead)
        self._ahead = EncodeAhead(wake=self._wake_worker)
        # The running track (one at most); started, followed and ended by the worker, or
        # ended by releasing the models, always under the pipeline lock. Its status (for
        # /diagnostics) is read without the lock.
        self._tracking = CommandTracking(self._publish_tracked, self._log_tracking)
        # Commands are answered in every state, so their subscription and the result
        # publisher exist from the start (their depths are read-only parameters).
        self._result_pub = self.create_publisher(
            String, "result", reliable(self.get_parameter("result_depth").value)
        )
        self._command_sub = self.create_subscription(
            String,
            "command",
            self._on_command,
            reliable(self.get_parameter("command_depth").value),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        # Diagnostics exist in every state, so a monitor sees an unconfigured node too.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self.get_parameter("diagnostics_period_s").value,
            self._guarded(self._publish_diagnostics),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    def autostart(self) -> None:
        """Configure, then activate (loading the models); run off the executor's threads.

        When either fails and ``exit_on_autostart_failure`` is set, the process ends with
        :data:`EXIT_AUTOSTART_FAILED` (the failure itself was logged once, by the transition)."""
        success = TransitionCallbackReturn.SUCCESS
        started = self.trigger_configure() == success and (
            self._state.stopping or self.trigger_activate() == success
        )
        exits = self.get_parameter("exit_on_autostart_failure").value
        if started or self._state.stopping or not exits:
            return
        self.get_logger().fatal(
            f"exiting with status {EXIT_AUTOSTART_FAILED}: autostart failed "
            "(exit_on_autostart_failure: true)"
        )
        self.exit_status = EXIT_AUTOSTART_FAILED
        self.context.try_shutdown()  # as SIGINT: main() returns from spin and exits

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        return self._transition("activate", self._activate)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        return self._transition("deactivate", self._deactivate)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._close)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        return self._transition("shutdown", self._close)

    def on_error(self, state: State) -> TransitionCallbackReturn:
        return self._transition("error", self._close)

    def _transition(self, name: str, body: Callable[[], str]) -> TransitionCallbackReturn:
        """Run a transition's ``body``, which returns "" on success, else why it failed (and
        has undone itself). Never raises: a failure (or an exception) is logged once and kept
        in the node's state, for /diagnostics and every command's ``not_ready``."""
        self._state.begin(name)
        try:
            reason = body()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason and not self._quiet():
            self.get_logger().error(f"{name} failed: {reason}")
        self._state.end(name, not reason, reason)
        return TransitionCallbackReturn.FAILURE if reason else TransitionCallbackReturn.SUCCESS

    def _configure(self) -> str:
        try:
            values = {p.name: self.get_parameter(p.name).value for p in PARAMETERS}
            settings = Settings.from_parameters(values)
        except ValueError as exc:
            return str(exc)
        try:
            outputs = reliable(settings.output_depth)
            self._outputs = {
                "mask": self.create_publisher(Image, "mask", outputs),
                "rationale": self.create_publisher(String, "rationale", outputs),
                "track": self.create_publisher(String, "track", outputs),
            }
            if settings.use_overlay:
                self._outputs["overlay"] = self.create_publisher(Image, "overlay", outputs)
            if rm.HAVE_VISION_MSGS:
                self._outputs["detections"] = self.create_publisher(
                    rm.Detection2DArray, "detections", outputs
                )
            self.settings = settings
            self._queue = CommandQueue(settings.queue_size)
            self._worker = threading.Thread(target=self._work, name="wise-inference", daemon=True)
            self._worker.start()
        except Exception:
            self._teardown()
            raise
        self.get_logger().info(
            f"configured: policy_model={settings.policy_model} "
            f"mode={settings.mode or '(checkpoint manifest, else wise_s)'} "
            f"device={settings.device} dtype={settings.dtype} queue_size={settings.queue_size} "
            f"image_reliability={settings.image_reliability} "
            f"max_image_age_s={settings.max_image_age_s} command_wait_s={settings.command_wait_s}"
        )
        return ""

    def _activate(self) -> str:
        settings = self.settings
        assert settings is not None  # configured
        started = time.perf_counter()
        self.get_logger().info(f"loading models ({settings.policy_model})")
        try:
            pipeline = self._pipeline_factory(settings)
        except Exception as exc:
            return f"model loading failed: {type(exc).__name__}: {exc}"
        with self._pipeline_lock:
            self._pipeline = pipeline
        try:  # from here on, a failure closes what was loaded
            if self._state.stopping:  # SIGINT came during the load: the process is exiting
                raise InterruptedError("SIGINT while the models loaded")
            self._start_serving(pipeline, settings)
        except BaseException:
            self._release_models()
            raise
        self.get_logger().info(
            f"active: models loaded in {time.perf_counter() - started:.1f} s; "
            f"encode_ahead={'on' if self._encode_ahead else 'off'} ({settings.encode_ahead})"
        )
        return ""

    def _start_serving(self, pipeline: NodePipeline, settings: Settings) -> None:
        """After the load: log what was loaded, warm it up, subscribe to images. Neither the
        description nor the warm-up can fail the activation: they cost a log line or speed,
        and a policy that cannot be reached now is answered ``policy_unavailable`` per command."""
        info, problem = models.describe(pipeline)
        if problem:
            self.get_logger().warning(f"could not describe the loaded models: {problem}")
        self.get_logger().info(f"loaded: {models.summary(info)}")
        if settings.warmup:
            self._warm_up(pipeline)
        self._encode_ahead = models.encodes_ahead(settings, info)
        with self._image_lock:
            self._image_recheck = self.create_timer(
                image_qos.RECHECK_S,
                self._guarded(self._subscribe_images),
                callback_group=self._image_group,
            )
        self._subscribe_images()

    def _warm_up(self, pipeline: NodePipeline) -> None:
        try:
            warm = pipeline.warmup()
        except Exception as exc:  # a failed warm-up costs speed, not service
            self.get_logger().warning(f"warm-up failed: {type(exc).__name__}: {exc}")
            return
        if warm.status is Status.POLICY_UNAVAILABLE:
            self._state.policy_answered(warm.error)
            self.get_logger().error(
                f"policy unavailable: {warm.error}; the node activates and answers each "
                "command policy_unavailable until the policy can be reached"
            )
        elif warm.status in _POLICY_ANSWERED:
            self.get_logger().info(f"warm-up request served in {warm.timings.total:.2f} s")
        else:
            self.get_logger().warning(f"warm-up request got {warm.status.value}: {warm.error}")

    def _deactivate(self) -> str:
        self._release_models()
        self.get_logger().info("inactive: models freed; commands get not_ready until activated")
        return ""

    def _close(self) -> str:
        self.close()
        return ""

    def close(self) -> None:
        """Free everything (idempotent): models, worker, output publishers and subscriptions."""
        self._release_models()
        self._teardown()

    def stop_now(self) -> bool:
        """On SIGINT: stop at once, without waiting for a model load or a long inference.

        Queued commands are dropped (the ROS context is gone: no result could be sent) and
        the worker gets ``SHUTDOWN_WAIT_S`` to finish. Returns False when work is still
        running (a load, an inference); the caller then ends the process, which frees it.
        """
        self._state.stop()
        if self._queue is not None:
            self._queue.close(drop_waiting=True)
        worker = self._worker
        if worker is not None:
            worker.join(timeout=SHUTDOWN_WAIT_S)
        idle = not self._state.loading and not (worker is not None and worker.is_alive())
        if idle:
            self.close()
        return idle

    def _release_models(self) -> None:
        self._encode_ahead = False
        with self._image_lock:
            if self._image_recheck is not None:
                self.destroy_timer(self._image_recheck)
                self._image_recheck = None
            if self._image_sub is not None:
                self.destroy_subscription(self._image_sub)
                self._image_sub = None
        self._state.camera("")
        self._frames.clear()
        with self._pipeline_lock:  # waits for a running inference to finish
            self._tracking.end(TrackState.STOPPED, "the models were released (deactivated)")
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
        for pub in self._outputs.values():
            self.destroy_publisher(pub)
        self._outputs = {}

    # ------------------------------------------------------------------ image QoS
    def _subscribe_images(self) -> None:
        """Subscribe to images with the QoS the settings and the cameras call for, again when
        it changed (``image_reliability: auto``), and name what cannot be received."""
        with self._image_lock:
            if self._image_recheck is not None and self.settings is not None:
                self._resubscribe_images(self.settings)

    def _resubscribe_images(self, settings: Settings) -> None:
        topic = self.resolve_topic_name("image")
        offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
        reliability = image_qos.choose_reliability(settings.image_reliability, offered)
        qos = settings.image_qos(reliability)
        if self._image_sub is None or reliability != self._image_reliability:
            if self._image_sub is not None:
                self.destroy_subscription(self._image_sub)
                self.get_logger().info(
                    f"image QoS: the publishers on {topic} now call for "
                    f"{image_qos.reliability_name(reliability)} (image_reliability: auto)"
                )
            self._image_sub = self.create_subscription(
                Image, "image", self._on_image, qos, callback_group=self._image_group
            )
            self._image_reliability = reliability
        problem = image_qos.mismatch(qos, offered, topic)
        if problem != self._state.camera_problem:
            if problem:
                self.get_logger().error(problem)
            else:
                self.get_logger().info(f"image QoS: every publisher on {topic} can be received")
            self._state.camera(problem)

    # ------------------------------------------------------------------ callbacks (executor threads)
    def _quiet(self) -> bool:
        """After SIGINT: the ROS context is (being) shut down; a log line would fail to reach
        /rosout, and a message to be sent."""
        return self._state.stopping or not self.context.ok()

    def _guarded(self, fn: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                if not self._quiet():
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
            if self._encode_ahead or self._tracking.running:
                self._wake_worker()  # a new frame to encode, or to track, while idle
        except Exception as exc:
            self.get_logger().error(f"image callback failed: {type(exc).__name__}: {exc}")

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
        if settings is None or jobs is None or not self._state.serving:
            self._fail(job, Status.NOT_READY, self._state.not_ready_reason())
            return
        if job.command.stop:  # served in order by the worker, which runs the track
            if not jobs.offer(job):
                self._fail(job, Status.QUEUE_FULL, f"rejected: queue_size={jobs.maxsize} full")
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

    def _image_topic(self) -> str:
        return self._image_sub.topic_name if self._image_sub is not None else "image"

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        jobs = self._queue
        assert jobs is not None
        idle = self._guarded(self._idle_work)
        while (job := jobs.take(idle=idle)) is not None:
            try:
                self._serve(job)
            except Exception as exc:
                if self._state.stopping:
                    return
                self.get_logger().error(
                    f"request {job.request_id} failed: {type(exc).__name__}: {exc}"
                )
                with contextlib.suppress(Exception):
                    self._fail(job, Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _serve(self, job: _Job) -> None:
        stopped = False
        if self._tracking.running:  # a new command preempts the track, a stop ends it
            ended = TrackState.STOPPED if job.command.stop else TrackState.PREEMPTED
            with self._pipeline_lock:
                stopped = self._tracking.end(ended, f"by request {job.request_id}")
        if job.command.stop:  # answered like any command: one result
            reason = "" if stopped else "no track was running"
            stop = Result.failure(job.command.text, Status.STOPPED, reason)
            self._publish(stop, job, self._clock_header(), {}, None)
            return
        settings, question = self.settings, job.command.question
        assert settings is not None and question is not None
        started = time.perf_counter()
        timing = {"queue_wait_ms": (started - job.received) * 1e3}
        frame = job.frame
        if frame is None:
            deadline = job.received + settings.command_wait_s
            frame = self._frames.wait_usable(
                settings.max_image_age_s, deadline, lambda: self._state.serving
            )
            timing["image_wait_ms"] = (time.perf_counter() - started) * 1e3
        if frame is None and self._state.serving:
            reason = self._frames.why_none_usable(
                self._image_topic(), settings.max_image_age_s, settings.command_wait_s
            )
            camera = self._state.camera_problem
            reason = f"{reason}; {camera}" if camera else reason
            self._fail(job, Status.NO_IMAGE, reason, None, timing)
            return
        if frame is None:
            self._fail(job, Status.NOT_READY, self._state.not_ready_reason(), None, timing)
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
                    job.command.text, Status.NOT_READY, self._state.not_ready_reason()
                )
            else:
                frame.encoding_started = True  # by the command: nothing to start ahead
                t0 = time.perf_counter()
                result = self._pipeline.segment(image, question, frame_key=frame.key)
                timing["pipeline_ms"] = (time.perf_counter() - t0) * 1e3
        if result.status is Status.POLICY_UNAVAILABLE:
            self._state.policy_answered(result.error)
        elif result.status in _POLICY_ANSWERED:
            self._state.policy_answered()
        if not result.ok and not self._quiet():  # the log says what the result says
            self.get_logger().warning(
                f"request {job.request_id} (id={job.command.id!r}) "
                f"{result.status.value}: {result.error}",
                throttle_duration_sec=1.0,
            )
        wanted = job.command.track
        track = (
            self._start_track(job, frame, result)
            if wanted or (wanted is None and settings.track_default)
            else None
        )
        self._publish(result, job, frame.msg.header, timing, image.pixels, track)

    # ------------------------------------------------------------------ tracking (worker thread)
    def _start_track(self, job: _Job, frame: Frame, result: Result) -> dict[str, Any]:
        """Seed a track with a command's answer on its frame; what the result says of it."""
        settings, question = self.settings, job.command.question
        assert settings is not None and question is not None
        with self._pipeline_lock:
            if self._pipeline is None and result.ok:
                return not_started(self._state.not_ready_reason())
            started = self._tracking.start(
                self._pipeline,
                settings.track_settings(),
                job.request_id,
                job.command.id,
                question,
                frame,
                result,
            )
        if self._tracking.running:
            self._wake_worker()  # frames may already wait
        return started

    def _idle_work(self) -> None:
        """The worker's work while no command waits: follow the running track on the newest
        frame, else encode the newest frame ahead (:mod:`.encode_ahead`)."""
        if self._tracking.running:
            self._follow()
        else:
            self._encode_newest_ahead()

    def _follow(self) -> None:
        """Track the newest frame, if it came after the last one looked at (newest wins)."""
        settings, current = self.settings, self._tracking.current
        frame = self._frames.newest()
        if settings is None or current is None or frame is None or not current.wants(frame.seq):
            return
        with self._pipeline_lock:
            if self._tracking.current is not current or self._pipeline is None:
                return  # ended meanwhile (models released)
            self._tracking.follow(
                self._pipeline,
                frame,
                settings.track_settings(),
                reground=settings.reground_on_loss,
            )

    def _publish_tracked(self, out: TrackOutput) -> None:
        """A track's message on ``track`` with its frame's header, and for a tracked frame or
        a re-grounded answer its mask (and overlay). Called with the pipeline lock held."""
        outputs = self._outputs
        if self._quiet() or "track" not in outputs:
            return
        if out.mask is not None:
            outputs["mask"].publish(rm.mask_to_image(out.mask, out.header))
        outputs["track"].publish(rm.track_to_string(out.report, out.header))
        if out.kind != ENDED and out.pixels is not None and "overlay" in outputs:
            picture = track_overlay(out.pixels, out.update, out.track.question.sent)
            outputs["overlay"].publish(rm.numpy_to_image(picture, "rgb8", out.header))

    def _log_tracking(self, level: int, message: str) -> None:
        logger = self.get_logger()
        if level >= logging.ERROR:
            logger.error(message)
        elif level >= logging.WARNING:  # a refused frame: a camera's problem, said now and then
            logger.warning(message, throttle_duration_sec=5.0)
        else:
            logger.info(message)

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
        if self._quiet():
            return
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
        track: dict[str, Any] | None = None,
    ) -> None:
        """``track``: whether the answer is being tracked (when the command asked for it)."""
        if self._quiet():
            return  # SIGINT: nothing can be sent
        outputs = self._outputs
        overlay_on = image if "overlay" in outputs else None
        for topic, msg in rm.success_messages(result, header, overlay_on=overlay_on).items():
            if topic in outputs:
                outputs[topic].publish(msg)
        elapsed_ms = (time.perf_counter() - job.received) * 1e3
        waits = sum(timing.get(k, 0.0) for k in ("queue_wait_ms", "image_wait_ms", "pipeline_ms"))
        node_info = {
            "request_id": job.request_id,
            **{k: round(v, 3) for k, v in timing.items()},
            "node_overhead_ms": round(max(elapsed_ms - waits, 0.0), 3),
            "latency_ms": round(elapsed_ms, 3),
        }
        extra = {"track": track} if track is not None else {}
        self._result_pub.publish(
            rm.result_to_string(result, header, node_info, job.command.id, **extra)
        )
        with self._stats_lock:
            self._stats.counts[result.status.value] += 1
            self._stats.last_status = result.status.value
            self._stats.last_latency_ms = round(elapsed_ms, 3)

    def _publish_diagnostics(self) -> None:
        health = self._state.health()
        jobs, pipeline, frame = self._queue, self._pipeline, self._frames.newest()
        with self._stats_lock:
            counts = dict(self._stats.counts)
            values: dict[str, Any] = {
                "state": self._state.label,
                "models": health.models,
                "queue_depth": len(jobs) if jobs is not None else 0,
                "queue_size": jobs.maxsize if jobs is not None else 0,
                "last_latency_ms": self._stats.last_latency_ms,
                "last_status": self._stats.last_status,
                "ok": counts.get(Status.OK.value, 0),
                "errors": sum(
                    n for s, n in counts.items() if s not in (Status.OK.value, Status.STOPPED.value)
                ),
                "counts": counts,
                "images": self._stats.images,
                "invalid_images": self._stats.invalid_images,
            }
        # The newest frame's frame_id: what the next command will be paired with.
        values["newest_frame"] = frame.frame_id if frame is not None else ""
        values["encode_ahead"] = "on" if self._encode_ahead else "off"
        # The running track (rate, skipped frames, state), or the last one's end.
        values["tracking"] = self._tracking.status
        values["encoded_ahead"] = self._ahead.encoded  # the last frame encoded ahead
        if self._image_sub is not None:  # what auto chose (or the explicit setting)
            values["image_reliability"] = image_qos.reliability_name(self._image_reliability)
        if pipeline is not None:  # reuse of SAM2 encodings: hits, misses, size, capacity
            values["encode_cache"] = pipeline.cache_info()
        if health.models == "loading":
            values["loading_s"] = round(self._state.seconds_in_state(), 1)
        self._diag_pub.publish(
            rm.diagnostics_message(
                self.get_clock().now().to_msg(),
                f"{self.get_name()}: segmentation",
                self.get_fully_qualified_name(),
                _LEVELS[health.level],
                health.message,
                values,
            )
        )


def main(args: list[str] | None = None, pipeline_factory: PipelineFactory | None = None) -> int:
    """Entry point of ``wise-perception-node`` / ``python -m wise_perception.node``; ``-h`` or
    ``--help`` prints the usage (parameters, launch, topics) instead of starting the node."""
    if wants_help(sys.argv if args is None else args):
        print(usage())
        return 0
    # rclpy's SIGINT handler shuts the context down, and spin() returns. Python's own handler
    # would also raise KeyboardInterrupt, at whatever line runs next: in the clean-up below it
    # would leave the interpreter waiting at exit for a model load to finish. So Python's does
    # nothing (rclpy's handler, installed next, still calls it after its own work).
    signal.signal(signal.SIGINT, lambda *_: None)
    rclpy.init(args=args)
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
    except Exception:
        # rclpy's executor can race a shutdown (an RCLError "the given context is not valid"
        # from building its wait set): then it is the shutdown, and must end as one.
        if node.context.ok():
            raise
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
        os._exit(node.exit_status)
    return node.exit_status


if __name__ == "__main__":
    sys.exit(main())
