"""The image subscription's QoS against what the cameras offer.

``image_reliability: auto`` does what ``ros2 bag record`` does: it asks the ROS graph which
QoS the publishers of the topic offer and subscribes reliable when every one of them offers
reliable (and while none publishes yet), best effort as soon as one offers only best effort
(a reliable subscription cannot receive from it; a best-effort one receives from both). The
node asks again every :data:`RECHECK_S` while active, as publishers come and go, and
resubscribes when the choice changes.

Whatever the choice, :func:`mismatch` names the publishers the subscription cannot receive
from (an explicit ``reliable`` against a best-effort camera, ``transient_local`` against a
volatile one): the node logs it, reports it on ``/diagnostics`` and in every ``no_image``
result.
"""

from __future__ import annotations

from collections.abc import Sequence

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from .settings import RELIABILITY

# How often the node asks the graph which QoS the image publishers offer (while active).
RECHECK_S = 1.0


def reliability_name(policy: ReliabilityPolicy) -> str:
    return "best_effort" if policy == ReliabilityPolicy.BEST_EFFORT else "reliable"


def choose_reliability(setting: str, offered: Sequence[QoSProfile]) -> ReliabilityPolicy:
    """The subscription's reliability for ``setting`` and the publishers' ``offered`` QoS."""
    if setting in RELIABILITY:
        return RELIABILITY[setting]
    if any(qos.reliability == ReliabilityPolicy.BEST_EFFORT for qos in offered):
        return ReliabilityPolicy.BEST_EFFORT
    return ReliabilityPolicy.RELIABLE


# What a subscription asks that a publisher's offer cannot meet: (QoS policy, the
# subscription's value, the publisher's value it cannot receive from, why and what to set).
_UNMET = (
    (
        "reliability",
        ReliabilityPolicy.RELIABLE,
        ReliabilityPolicy.BEST_EFFORT,
        "offer only best_effort, which this reliable subscription cannot receive "
        "(set image_reliability: auto or best_effort)",
    ),
    (
        "durability",
        DurabilityPolicy.TRANSIENT_LOCAL,
        DurabilityPolicy.VOLATILE,
        "offer only volatile durability, which this transient_local subscription cannot "
        "receive (set image_durability: volatile)",
    ),
)


def mismatch(subscription: QoSProfile, offered: Sequence[QoSProfile], topic: str) -> str:
    """Which publishers ``subscription`` cannot receive from, and what to set ("" if none)."""
    problems = []
    for policy, asked, unmet, why in _UNMET:
        if getattr(subscription, policy) == asked:
            count = sum(getattr(qos, policy) == unmet for qos in offered)
            if count:
                problems.append(f"{count} publisher(s) on {topic} {why}")
    return "QoS mismatch: " + "; ".join(problems) if problems else ""
