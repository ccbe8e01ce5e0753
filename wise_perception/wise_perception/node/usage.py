"""``wise-perception-node --help``: how to start the node, its topics and its parameters.

The parameter list is made from the parameter table (:mod:`.settings`), so it cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING

from rclpy.utilities import remove_ros_args

from .settings import PARAMETERS

TOPICS = """\
============== ===== ================================ =======================================
topic          dir   type                             when
============== ===== ================================ =======================================
image          in    sensor_msgs/Image                while active (QoS: ``image_*`` params)
command        in    std_msgs/String                  in every state (reliable): plain text,
                                                      {"id": ..., "command": ..., "track": ...}
                                                      or {"stop": true}
result         out   std_msgs/String (JSON)           exactly one per command, every state
mask           out   sensor_msgs/Image mono8 0/255    successes, then each tracked frame
track          out   std_msgs/String (JSON)           each tracked frame, and a track's end
rationale      out   std_msgs/String                  successes only
overlay        out   sensor_msgs/Image rgb8           successes (and tracked frames), when
                                                      ``use_overlay``
detections     out   vision_msgs/Detection2DArray     successes, where vision_msgs is installed
/diagnostics   out   diagnostic_msgs/DiagnosticArray  every ``diagnostics_period_s``
============== ===== ================================ ======================================="""

START = """\
usage: wise-perception-node [-h] [--ros-args ...]
       python -m wise_perception.node [-h] [--ros-args ...]

The WISE perception lifecycle node: camera image + language command in, mask + rationale out.

Start it:
  wise-perception-node --ros-args --params-file wise_perception/config/segment.yaml -r __ns:=/wise
  ros2 launch wise_perception segment.launch.py image_topic:=/camera/color/image_raw
  make run MODEL=/path/to/policy SEGMENTER=/path/to/sam2 IMAGE_TOPIC=/camera/color/image_raw
Send a command:
  ros2 topic pub --once /wise/command std_msgs/String "data: 'the cup closest to the laptop'"
"""


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the arguments outside ``--ros-args`` ask for help."""
    return any(arg in ("-h", "--help") for arg in remove_ros_args(list(argv))[1:])


def usage() -> str:
    """The help text: how to start it, the topics (relative to the namespace), the parameters."""
    lines = [START, "Topics (relative: -r __ns:=/wise puts them under /wise):", TOPICS, ""]
    lines.append("Parameters (-p name:=value; (ro): fixed for the life of the process):")
    for parameter in PARAMETERS:
        default = parameter.default if parameter.default is not MISSING else ""
        flag = " (ro)" if parameter.metadata["read_only"] else ""
        lines.append(f"  {parameter.name} = {default!r}{flag}")
        lines.append(f"      {parameter.metadata['description']}")
    return "\n".join(lines)
