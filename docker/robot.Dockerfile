# Robot image: ROS 2 (from the distribution, never the PyPI wheels) + the WISE-S node on a CUDA GPU.
#   docker build -f docker/robot.Dockerfile -t wise-perception:robot .
#   docker run --gpus all --net host -v ~/models:/models wise-perception:robot \
#     ros2 launch wise_perception segment.launch.py image_topic:=/camera/color/image_raw
# The CUDA runtime comes with the torch wheel; the host needs the NVIDIA driver and container toolkit.
ARG ROS_DISTRO=jazzy
FROM ros:${ROS_DISTRO}-ros-base

ARG ROS_DISTRO
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 HF_HOME=/models/hf
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-venv python3-colcon-common-extensions \
        ros-${ROS_DISTRO}-vision-msgs ros-${ROS_DISTRO}-launch-ros ros-${ROS_DISTRO}-diagnostic-msgs \
    && rm -rf /var/lib/apt/lists/*

# A venv that still sees the distribution's rclpy (system site packages), so pip never
# replaces ROS; the model stack is pinned by the repository's constraints file.
RUN python3 -m venv --system-site-packages /opt/wise && /opt/wise/bin/pip install -q "uv==0.13.8"
# The repository keeps its relative symlinks (ros2_ws/src/wise_perception -> ../../wise_perception,
# launch -> wise_perception/launch), so ros2_ws/ builds as it does on a workstation.
COPY . /opt/wise_src
WORKDIR /opt/wise_src
RUN VIRTUAL_ENV=/opt/wise /opt/wise/bin/uv pip install -c constraints.txt ./wise_perception
# vLLM on the robot is optional (its own torch/transformers pins): build with --build-arg WITH_VLLM=1
ARG WITH_VLLM=0
RUN if [ "$WITH_VLLM" = "1" ]; then VIRTUAL_ENV=/opt/wise /opt/wise/bin/uv pip install "vllm==0.32.0"; fi

SHELL ["/bin/bash", "-c"]
RUN source /opt/ros/${ROS_DISTRO}/setup.bash && source /opt/wise/bin/activate \
    && cd ros2_ws && colcon build --install-base /opt/wise_ws/install
RUN printf '%s\n' '#!/bin/bash' 'set -e' "source /opt/ros/${ROS_DISTRO}/setup.bash" \
        'source /opt/wise/bin/activate' 'source /opt/wise_ws/install/setup.bash' 'exec "$@"' \
        > /entrypoint.sh && chmod +x /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["ros2", "launch", "wise_perception", "segment.launch.py"]
