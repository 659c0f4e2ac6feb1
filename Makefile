# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo
DEMO_PATIENTS := 7
DEMO_SEED := 7
CORES ?= 2
# The validation study (docs/validation.md): its own cohort, seed and config. On a GPU machine:
#   make study STUDY_CONFIG=config/study_gpu.yaml STUDY_PRESET=paper CORES=16
STUDY_DIR := study_cohort
STUDY_PATIENTS := 48
STUDY_SEED := 4801
STUDY_PRESET ?= tiny
STUDY_CONFIG ?= config/study.yaml

.PHONY: venv torch-cpu torch-cuda demo demo-data study study-data test lint format bench clean

venv: $(STAMP)

# torch is installed first and pinned (see pyproject.toml for every pin). Which build that is
# depends on pip's configuration: a CPU wheel where pip finds one (a find-links folder, the PyTorch
# CPU index), else PyPI's torch, which on Linux x86_64 is a CUDA build. To choose, after `make
# venv`: `make torch-cpu` or `make torch-cuda`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

TORCH_VERSION := 2.13.0
# A CUDA version PyTorch publishes torch $(TORCH_VERSION) wheels for (pytorch.org, "Get started"),
# and that the machine's NVIDIA driver supports: make torch-cuda TORCH_CUDA=cu126
TORCH_CUDA ?= cu128

# Replace torch in .venv by the CPU build (small, no NVIDIA libraries). Only torch is reinstalled.
# Offline it still works where pip has the wheel in a find-links folder: the unreachable index
# is retried a few times, then the local wheel is installed.
torch-cpu: $(STAMP)
	$(BIN)/pip install --force-reinstall --no-deps "torch==$(TORCH_VERSION)+cpu" \
		--extra-index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python -c "import torch; print('torch', torch.__version__)"

# Replace torch in .venv by a CUDA build from PyTorch's wheel index (downloads GBs: torch and
# the NVIDIA libraries it needs; the other dependencies stay as they are unless torch needs
# another version). The local version in the pin keeps a CPU wheel from matching.
torch-cuda: $(STAMP)
	$(BIN)/pip install "torch==$(TORCH_VERSION)+$(TORCH_CUDA)" \
		--index-url https://download.pytorch.org/whl/$(TORCH_CUDA)
	$(BIN)/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
		'GPU available:', torch.cuda.is_available())"

# Rewritten when the Makefile or the phantom's code changes (a checkout with an older cohort).
$(DEMO_DIR)/patients.tsv: $(STAMP) Makefile $(wildcard src/abmseg/synth/*.py)
	$(BIN)/abmseg synth $(DEMO_DIR) --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED) --preset tiny

demo-data: $(DEMO_DIR)/patients.tsv

demo: demo-data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --keep-going \
		--configfile config/demo.yaml
	@cat results/metrics/summary.md

# Rewritten when the preset asked for differs from the one on disk (a stamp names it).
$(STUDY_DIR)/.preset-$(STUDY_PRESET): $(STAMP) Makefile $(wildcard src/abmseg/synth/*.py)
	rm -rf $(STUDY_DIR)
	$(BIN)/abmseg synth $(STUDY_DIR) --patients $(STUDY_PATIENTS) --seed $(STUDY_SEED) \
		--preset $(STUDY_PRESET)
	touch $@

study-data: $(STUDY_DIR)/.preset-$(STUDY_PRESET)

study: study-data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --keep-going \
		--configfile $(STUDY_CONFIG)
	@cat results/study/summary.md

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

lint: demo-data
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow/Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/snakefmt workflow/Snakefile workflow/rules

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run_all.py

clean:
	rm -rf results logs benchmarks .snakemake $(DEMO_DIR) $(STUDY_DIR)
