# The two set-up commands of the README: `make run` (the node) and `make test` (the suite).
# Both create .venv with uv and install what they need; re-running them is cheap.
VENV    ?= .venv
PY      := $(VENV)/bin/python
UV      ?= uv
PARAMS  ?= wise_perception/config/segment.yaml
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.build/torch_extensions
# Tiny random-weight test models (and the policies taught from them) are built once here
# and shared by every test process, the node subprocesses included.
export WISE_TINY_CACHE ?= $(CURDIR)/.build/tiny_cache

.PHONY: run test lint demo bench env env-test clean qwen-tokenizer

# uv is used (not pip) because it ignores the machine's PIP_FIND_LINKS, which would
# otherwise pair the local CPU torch with the registry's CUDA torchvision (they do not import together).
$(PY):
	python3 -m pip install --quiet "uv==0.13.8"
	$(UV) venv --quiet --python 3.11 $(VENV)

env: $(PY)
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt \
		-e ./wise_perception -e ./wise_training

env-test: $(PY)
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt \
		-e "./wise_perception[ros-wheels]" -e "./wise_training[deepspeed]" \
		-r requirements-test.txt

# The main job: the perception node with the parameters of $(PARAMS), activating itself.
# On a ROS 2 machine prefer `ros2 launch wise_perception segment.launch.py` (see README).
run: env
	@if command -v ros2 >/dev/null 2>&1 && [ -n "$$ROS_DISTRO" ]; then \
		echo "ROS 2 $$ROS_DISTRO found: starting the node with its parameters"; \
	else \
		echo "no sourced ROS 2: installing the ROS 2 wheels into $(VENV)"; \
		VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt -e "./wise_perception[ros-wheels]"; \
	fi
	$(PY) -m wise_perception.node --ros-args --params-file $(PARAMS) -r __ns:=/wise

test: env-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

lint: env-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Offline run of the CLI on tiny models (no hub needed): a random tiny policy taught on the CPU
# to answer the demo image's red square, and a random tiny SAM2 (its mask is noise).
demo: env
	$(PY) -m wise_perception.testing.tiny_models --out .build/tiny
	test -f .build/tiny/taught/model.safetensors || \
		$(PY) -m wise_perception.testing.teach --base .build/tiny/policy --out .build/tiny/taught
	$(PY) -m wise_perception.segment .build/tiny/demo.png "the red square" \
		--model .build/tiny/taught --segmenter .build/tiny/sam2 --out .build/demo

bench: env
	$(PY) -m wise_perception.bench

clean:
	rm -rf $(VENV) .build ros2_ws/build ros2_ws/install ros2_ws/log

# The real Qwen2.5 tokenizer, offline, for realistic token and forward-pass counts (wise-bench,
# tests/perception/test_engine.py): the dashscope wheel ships its BPE ranks. Downloaded only,
# never installed (its dependencies are heavy), and converted into .build/qwen25_tokenizer.
qwen-tokenizer: env
	test -f .build/qwen25_tokenizer/tokenizer_config.json || { \
		$(PY) -m pip --version >/dev/null 2>&1 || VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet pip; \
		$(PY) -m pip download --quiet --no-deps "dashscope==2.0.2" -d .build/dashscope && \
		$(PY) -m wise_perception.policy.qwen_tokenizer .build/dashscope/dashscope-2.0.2-py3-none-any.whl \
			--out .build/qwen25_tokenizer; }
