# kdmri — make demo / make test / make data / make bench / make lab / make test-browser
#
# Everything runs inside a local virtual environment (.venv/) that the first target creates.
# Targets are idempotent: a second run reuses the environment and the data that are there.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
TORCH_VERSION ?= 2.13.0
FASTMRI_VERSION ?= 0.3.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.kdmri-installed
DATA ?= data/demo
PYTEST_ARGS ?=
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
LAB_ARGS ?= --no-browser

.PHONY: help install data demo test test-browser lab bench bench-distill pretrained clean-venv

help:
	@echo "make demo         - install, build the demo data, run the notebooks into runs/demo/"
	@echo "make test         - install, build the demo data, run the test suite (browser test included)"
	@echo "make test-browser - only the JupyterLab + headless Chromium test (screenshots in runs/browser/)"
	@echo "make lab          - JupyterLab on http://$(LAB_IP):$(LAB_PORT)/lab in notebooks/, with this venv's kernel"
	@echo "make data         - build the embedded demo data into $(DATA)/"
	@echo "make bench        - benchmark the models (params / FLOPs / latency)"
	@echo "make pretrained   - retrain the shipped zoo (kdmri_lib/pretrained/; hours of CPU, resumable)"
	@echo "make bench-distill - distillation ablation, 3 seeds (sr x4, tiny student; BENCH_ARGS='--epochs 8 --steps-per-epoch 250' scales it)"

install: $(STAMP)

# torch: kept if the base interpreter already has one (Colab, a conda env): the venv then sees the
# system site-packages. Otherwise CUDA builds only where an NVIDIA GPU is present; on a CPU-only
# machine the CPU build (from PyTorch's CPU index when it is reachable, else whatever
# `torch==$(TORCH_VERSION)` resolves to through the configured indexes, which here is the CPU wheel).
# fastmri is installed without its dependencies: its wheel pulls torchvision and pytorch-lightning,
# which only its training scripts use (and the registry's torchvision cannot import next to a CPU
# torch); pyproject.toml lists what its library code needs.
$(STAMP): pyproject.toml
	@if [ ! -x "$(PY)" ]; then \
	  if "$(PYTHON)" -c "import torch" 2>/dev/null; then \
	    echo "[install] torch found in $(PYTHON): creating $(VENV) with system site-packages (torch kept)"; \
	    "$(PYTHON)" -m venv --system-site-packages $(VENV); \
	  else \
	    echo "[install] creating $(VENV) with $(PYTHON)"; \
	    "$(PYTHON)" -m venv $(VENV); \
	  fi; \
	fi
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "[install] torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed: kept"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "[install] NVIDIA GPU found: installing torch==$(TORCH_VERSION) (CUDA build)"; \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	elif $(PY) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
	  echo "[install] CPU-only machine: torch==$(TORCH_VERSION) from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX); \
	else \
	  echo "[install] CPU-only machine: torch==$(TORCH_VERSION) from the configured package index"; \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps "fastmri==$(FASTMRI_VERSION)"
	$(PY) -c "import kdmri_lib, fastmri.data, fastmri.evaluate; print('[install] ok:', kdmri_lib.environment_summary())"
	@touch $(STAMP)

data: $(STAMP)
	$(PY) data_scripts/make_demo_data.py --out $(DATA)

# the five notebooks, headless (papermill), into runs/demo/: executed copies, checkpoints, figures,
# results.md. DEMO_ARGS passes parameters, e.g. DEMO_ARGS='-p epochs 1' or '--only 01_kspace_basics'
DEMO_ARGS ?=
demo: data
	$(PY) data_scripts/make_demo_data.py --out $(DATA) --summary
	$(PY) -m kdmri_lib.notebook_runner --out runs/demo --data $(DATA) $(DEMO_ARGS)

test: data
	$(PY) -m pytest $(PYTEST_ARGS)

# needs Debian's chromium + chromium-driver (apt-get install chromium chromium-driver); skips without
test-browser: data
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

# JupyterLab in notebooks/ (their ../data/demo and ../runs/demo defaults work there). The kernel is
# this venv's: its python3 kernel spec is (re)written to point at $(PY), and JUPYTER_PATH puts it
# ahead of any python3 kernel in ~/.local/share/jupyter. Kernels talk over local sockets (ipc):
# no TCP ports, no ipykernel warning about unencrypted TCP. A random token; the URL is printed.
lab: data
	@$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
	@token=$$($(PY) -c "import secrets; print(secrets.token_hex(24))"); \
	root=""; if [ "$$(id -u)" = 0 ]; then root="--allow-root"; fi; \
	echo "[lab] kernel: $(abspath $(PY))"; \
	echo "[lab] open  http://$(LAB_IP):$(LAB_PORT)/lab?token=$$token   (Ctrl+C twice stops the server)"; \
	cd notebooks && JUPYTER_PATH="$(abspath $(VENV))/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH}" \
	  exec "$(abspath $(PY))" -m jupyterlab --ip=$(LAB_IP) --port=$(LAB_PORT) --port-retries=0 \
	  --IdentityProvider.token=$$token --KernelManager.transport=ipc $$root $(LAB_ARGS)

bench: $(STAMP)
	$(PY) -m kdmri_lib.benchmark --out runs/bench

# the few-references protocol (kdmri_lib.datasets.protocol), every student row x 3 seeds, scored with fastMRI's metric
# functions on the sagittal validation slices and the held-out scan: runs/bench/ablation.{md,json,png}
# (finished runs are reused, BENCH_ARGS=--force retrains; the measured wall time is in ablation.md)
BENCH_ARGS ?=
# two one-thread training processes: the tiny models use two cores poorly (docs/training.md); BENCH_JOBS=1 trains in one
BENCH_JOBS ?= 2
bench-distill: data
	$(PY) -m kdmri_lib.ablation --out runs/bench --data $(DATA) --jobs $(BENCH_JOBS) $(BENCH_ARGS)

# retrains every zoo entry (resumable: runs/pretrained/NAME), scores it on the demo validation slices and
# rewrites kdmri_lib/pretrained/manifest.json; PRETRAINED_ARGS='--only sr4_student_tiny --threads 1'
PRETRAINED_ARGS ?=
pretrained: data
	$(PY) -m kdmri_lib.pretrained.build --data $(DATA) $(PRETRAINED_ARGS)

clean-venv:
	rm -rf $(VENV)
