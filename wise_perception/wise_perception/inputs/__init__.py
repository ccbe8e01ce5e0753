"""What the node does with its inputs, without ROS: the node and the bag replay share it.

``images`` (image messages -> RGB: sensor_msgs/Image encodings with row padding, and
CompressedImage jpeg/png), ``commands`` (command messages -> checked commands) and
``frame_slot`` (the newest frame a command is paired with, aged against an injected clock).
They work on any object with the message's fields: rclpy's messages in the node, rosbags'
in the replay (same attribute names), so a bag replays through the node's own rules.
"""
