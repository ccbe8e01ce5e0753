"""Where the node stands: its lifecycle state, why the last transition failed, whether the
policy answered and whether the camera can be received. The one place the node reads its own
state from.

rclpy's lifecycle state machine has no public getter, so the node keeps this mirror of it,
updated by its transition callbacks (the only code that changes the lifecycle state): a
transition begins in its transition state (``configuring``, ``activating``...) and ends in
rclpy's success or failure state. What a command gets, and what ``/diagnostics`` says, is
derived from it here, so the two never disagree.

No ROS in here: the labels are the lifecycle labels of ``lifecycle_msgs/State``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

# transition -> (transition state, state on success, state on failure), as in rcl_lifecycle.
TRANSITIONS: dict[str, tuple[str, str, str]] = {
    "configure": ("configuring", "inactive", "unconfigured"),
    "cleanup": ("cleaningup", "unconfigured", "inactive"),
    "activate": ("activating", "active", "inactive"),
    "deactivate": ("deactivating", "inactive", "active"),
    "shutdown": ("shuttingdown", "finalized", "finalized"),
    "error": ("errorprocessing", "unconfigured", "finalized"),
}

OK, WARN, ERROR = "ok", "warn", "error"  # diagnostic levels, mapped to ROS's by the node


@dataclass(frozen=True)
class Health:
    """What /diagnostics reports: a level (:data:`OK`, :data:`WARN`, :data:`ERROR`), a one-line
    message, and the state of the models (``loading``, ``loaded``, ``failed``, ``not loaded``)."""

    level: str
    message: str
    models: str


class NodeState:
    """The node's lifecycle state and its problems; thread-safe (callbacks, worker, timer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._label = "unconfigured"
        self._since = time.monotonic()  # when the current state was entered
        self._failure = ""  # why the last transition failed ("" after a success)
        self._policy_problem = ""  # why the policy did not answer the last request
        self._camera_problem = ""  # why frames from a camera cannot arrive (a QoS mismatch)
        self._stopping = False

    # ------------------------------------------------------------------ transitions
    def begin(self, transition: str) -> None:
        with self._lock:
            self._enter(TRANSITIONS[transition][0])

    def end(self, transition: str, ok: bool, reason: str = "") -> None:
        """The transition's outcome: ``reason`` says why it failed, for every later command."""
        _, success, failure = TRANSITIONS[transition]
        with self._lock:
            self._enter(success if ok else failure)
            if ok and transition in ("configure", "activate"):
                self._failure = ""
            elif not ok:
                self._failure = f"{transition} failed: {reason}"
            if transition != "activate" or not ok:
                self._policy_problem = self._camera_problem = ""

    def stop(self) -> None:
        """SIGINT: nothing more is served or published."""
        with self._lock:
            self._stopping = True

    def policy_answered(self, problem: str = "") -> None:
        """A request reached the policy (``problem``: why it could not answer, "" when it did)."""
        with self._lock:
            self._policy_problem = problem

    def camera(self, problem: str) -> None:
        """Why frames from a camera cannot arrive ("" when they can)."""
        with self._lock:
            self._camera_problem = problem

    def _enter(self, label: str) -> None:
        self._label, self._since = label, time.monotonic()

    # ------------------------------------------------------------------ reading
    @property
    def label(self) -> str:
        return self._label

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def serving(self) -> bool:
        """Commands are served (active, and not stopping)."""
        with self._lock:
            return self._label == "active" and not self._stopping

    @property
    def loading(self) -> bool:
        with self._lock:
            return self._label == "activating"

    def seconds_in_state(self) -> float:
        with self._lock:
            return time.monotonic() - self._since

    @property
    def failure(self) -> str:
        return self._failure

    @property
    def camera_problem(self) -> str:
        return self._camera_problem

    def not_ready_reason(self) -> str:
        """Why a command is not served now (the error of its ``not_ready`` result)."""
        with self._lock:
            label, failure, since = self._label, self._failure, self._since
        if label == "activating":
            return (
                f"models are loading ({time.monotonic() - since:.0f} s so far); "
                "commands are served once the node is active"
            )
        if label == "finalized":
            return "node is finalized (shut down); start it again"
        if self._stopping:
            return "node is shutting down"
        fix = {
            "unconfigured": "configure and activate it through the lifecycle",
            "inactive": "activate it through the lifecycle",
        }.get(label, "commands are served once the node is active")
        reason = f"node is {label}, models are not loaded; {fix}"
        return f"{reason} (last {failure})" if failure else reason

    def health(self) -> Health:
        """The /diagnostics summary of this state."""
        with self._lock:
            label, failure, since = self._label, self._failure, self._since
            policy, camera = self._policy_problem, self._camera_problem
        if label == "activating":
            seconds = time.monotonic() - since
            return Health(WARN, f"loading models ({seconds:.0f} s so far)", "loading")
        if label == "active":
            problems = [f"policy unavailable: {policy}"] if policy else []
            problems += [camera] if camera else []
            if problems:
                return Health(WARN, "; ".join(["active", *problems]), "loaded")
            return Health(OK, "active", "loaded")
        models = "failed" if failure.startswith("activate") else "not loaded"
        if failure:
            return Health(ERROR, f"{label}: {failure}", models)
        return Health(WARN, f"{label}: models not loaded", models)
