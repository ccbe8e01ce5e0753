"""Launch the WISE perception lifecycle node.

    ros2 launch wise_perception segment.launch.py image_topic:=/camera/color/image_raw

Topics land under ``namespace`` (default ``wise``): ``/wise/command`` in, ``/wise/result``,
``/wise/mask``, ``/wise/rationale`` (and ``/wise/overlay``, ``/wise/detections``) out; the
node's ``image`` input is remapped to ``image_topic``. Parameters come from ``params_file``
(default: the installed ``share/wise_perception/config/segment.yaml``); the ``mode``,
``device`` and ``use_overlay`` arguments override the file only when given (their default,
empty, leaves the file's value). The node configures and activates itself (parameter
``autostart``), so no lifecycle manager is needed.

The launch packages are imported inside the functions, so :func:`parameter_overrides` (which
decides what reaches the node) can be imported and tested where they are not installed.
"""

from __future__ import annotations

import os
from typing import Any

PACKAGE = "wise_perception"
# The console script of wise_perception/pyproject.toml, installed into lib/wise_perception
# (setup.cfg), which is where `ros2 run` and launch_ros look for executables.
EXECUTABLE = "wise-perception-node"
NODE_NAME = "wise_perception"
# Launch arguments that override a parameter of the params file, when given.
OVERRIDES = ("mode", "device", "use_overlay")
_BOOLEANS = {"true": True, "false": False}


def parameter_overrides(values: dict[str, str]) -> dict[str, Any]:
    """The node parameters set by launch arguments: only those given (non-empty), typed.

    ``{"mode": "", "device": "", "use_overlay": ""}`` (nothing given) -> ``{}``: the params
    file's values stand. Raises ValueError for a ``use_overlay`` that is not true/false.
    """
    out: dict[str, Any] = {}
    for name in OVERRIDES:
        text = values.get(name, "").strip()
        if not text:
            continue
        if name == "use_overlay":
            if text.lower() not in _BOOLEANS:
                raise ValueError(f"use_overlay:={text!r}; expected true or false")
            out[name] = _BOOLEANS[text.lower()]
        else:
            out[name] = text
    return out


def _node(context: Any) -> list[Any]:
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode

    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = parameter_overrides(given)
    return [
        LifecycleNode(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=LaunchConfiguration("namespace"),
            # Later entries win: an override dict only holds what the user gave.
            parameters=[LaunchConfiguration("params_file"), *([overrides] if overrides else [])],
            remappings=[("image", LaunchConfiguration("image_topic"))],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> Any:
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "segment.yaml")
    arguments = [
        DeclareLaunchArgument(
            "namespace", default_value="wise", description="namespace of all topics"
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="/camera/image_raw",
            description="camera topic (sensor_msgs/Image)",
        ),
        DeclareLaunchArgument(
            "params_file", default_value=default_params, description="parameters file"
        ),
        DeclareLaunchArgument(
            "mode",
            default_value="",
            description="prompt mode: wise_s, wise, wise_f, ... (empty: the params file's)",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="",
            description="auto, cpu, cuda, cuda:N (empty: the params file's)",
        ),
        DeclareLaunchArgument(
            "use_overlay",
            default_value="",
            description="true: also publish an rgb8 overlay (empty: the params file's)",
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
