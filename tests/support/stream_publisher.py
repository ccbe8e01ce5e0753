"""A camera and an operator in a process of their own: publishes frames and commands on
``/wise/image`` and ``/wise/command`` (reliable, as REP 2003 drivers do) when told to on stdin.

``python -m support.stream_publisher`` (with ``tests`` on the path) reads JSON lines::

    {"op": "wait_for_subscribers", "count": 2}
    {"op": "image", "frame_id": "f1", "seed": 1, "encoding": "rgb8", "pad": 0, "age_s": 0}
    {"op": "command", "data": "{\\"id\\": \\"c1\\", \\"command\\": \\"the red square\\"}"}
    {"op": "quit"}

and answers each with a line ``done <op>`` once it is published. ``age_s`` stamps a frame that
long before now (a stale camera); ``encoding`` relabels the pixels (an unknown one included).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from support.bags import rgb
from wise_perception.node import messages as rm


def main() -> int:
    rclpy.init()
    node = Node("wise_test_stream")
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    images = node.create_publisher(Image, "/wise/image", reliable)
    commands = node.create_publisher(String, "/wise/command", reliable)
    for line in sys.stdin:
        order = json.loads(line)
        op = order["op"]
        if op == "quit":
            break
        if op == "wait_for_subscribers":
            deadline = time.monotonic() + 60
            while (
                min(images.get_subscription_count(), commands.get_subscription_count())
                < order["count"]
            ):
                if time.monotonic() > deadline:
                    print("timeout waiting for subscribers", flush=True)
                    return 1
                time.sleep(0.05)
        elif op == "image":
            stamp = node.get_clock().now().nanoseconds - round(order.get("age_s", 0) * 1e9)
            header = rm.header_of(rclpy.time.Time(nanoseconds=stamp).to_msg(), order["frame_id"])
            pixels = rgb(order["seed"])
            encoding, pad = order.get("encoding", "rgb8"), order.get("pad", 0)
            if encoding == "bgr8":
                pixels = np.ascontiguousarray(pixels[:, :, ::-1])
            msg = rm.numpy_to_image(pixels, "rgb8", header)
            msg.encoding = encoding
            if pad:
                rows = pixels.reshape(pixels.shape[0], -1)
                padding = np.zeros((rows.shape[0], pad), np.uint8)
                msg.step = rows.shape[1] + pad
                msg.data = np.concatenate([rows, padding], 1).tobytes()
            images.publish(msg)
        elif op == "command":
            commands.publish(String(data=order["data"]))
        print(f"done {op}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
