# Training image: GRPO on GPUs with DeepSpeed (and optionally vLLM rollouts). No ROS.
#   docker build -f docker/training.Dockerfile -t wise-perception:training .
#   docker run --gpus all --ipc host -v $PWD/data:/data -v $PWD/outputs:/outputs wise-perception:training \
#     accelerate launch --config_file wise_training/wise_training/accelerate/zero3.yaml \
#       -m wise_training.train --config wise_training/wise_training/configs/wise.yaml
FROM nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive UV_LINK_MODE=copy HF_HOME=/models/hf \
    TORCH_EXTENSIONS_DIR=/opt/torch_extensions
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/wise && /opt/wise/bin/pip install -q "uv==0.13.8"
ENV VIRTUAL_ENV=/opt/wise PATH=/opt/wise/bin:$PATH
WORKDIR /workspace
COPY . /workspace
RUN uv pip install -c constraints.txt -e ./wise_perception -e "./wise_training[deepspeed]"
# vLLM rollouts pin transformers < 5.20: install into this image only when you use them.
ARG WITH_VLLM=0
RUN if [ "$WITH_VLLM" = "1" ]; then uv pip install "vllm>=0.22,<0.32"; fi
CMD ["python", "-m", "wise_training.train", "--help"]
