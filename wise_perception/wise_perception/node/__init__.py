"""The ROS 2 side of WISE perception: the only package that imports rclpy or a message package.

``lifecycle`` (the lifecycle node: callbacks, transitions, publishing), ``settings`` (the
parameter table), ``state`` (where the node stands), ``image_qos`` (the image subscription's
QoS against the cameras'), ``usage`` (``--help``), ``messages`` (messages in and out),
``command_queue`` (bounded, with the worker's idle work), ``encode_ahead`` (SAM2 on the newest
frame while idle), ``models`` (what the node calls on the pipeline, and loading it). Reading
images and commands and pairing them (the newest frame) is ROS-free, in
:mod:`wise_perception.inputs`, and so are the tracking rules (a command's track: the next
frame, its ends, what ``track`` says), in :mod:`wise_perception.command_track`: both are shared
with the bag replay.

Run it with ``python -m wise_perception.node`` (or ``wise-perception-node``, or ``ros2 launch
wise_perception segment.launch.py``). Importing this package imports nothing else: the
modules import rclpy when they are imported themselves.
"""
