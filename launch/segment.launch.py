"""Launch the WISE perception lifecycle node.

    ros2 launch wise_perception segment.launch.py image_topic:=/camera/color/image_raw

Topics land under ``namespace`` (default ``wise``): ``/wise/command`` in, ``/wise/result``,
``/wise/mask``, ``/wise/rationale`` (and ``/wise/overlay``, ``/wise/detections``) out; the
node's ``image`` input is remapped to ``image_topic``. Parameters come from ``params_file``
(default: the installed ``share/wise_perception/config/segment.yaml``); the ``mode``,
``device`` and ``use_overlay`` arguments override the file. The node configures and
activates itself (parameter ``autostart``), so no lifecycle manager is needed.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "wise_perception"
# The console script of wise_perception/pyproject.toml, installed into lib/wise_perception
# (setup.cfg), which is where `ros2 run` and launch_ros look for executables.
EXECUTABLE = "wise-perception-node"
NODE_NAME = "wise_perception"


def generate_launch_description() -> LaunchDescription:
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
            description="prompt mode: wise_s, wise, wise_f, ... (empty: the checkpoint manifest's, else wise_s)",
        ),
        DeclareLaunchArgument(
            "device", default_value="auto", description="auto, cpu, cuda, cuda:N"
        ),
        DeclareLaunchArgument(
            "use_overlay", default_value="false", description="also publish an rgb8 overlay"
        ),
    ]
    node = LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "mode": ParameterValue(LaunchConfiguration("mode"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "use_overlay": ParameterValue(LaunchConfiguration("use_overlay"), value_type=bool),
            },
        ],
        remappings=[("image", LaunchConfiguration("image_topic"))],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
