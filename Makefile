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

.PHONY: venv demo demo-data study study-data test lint format bench clean

venv: $(STAMP)

# torch is installed first and pinned: pip then takes the CPU wheel from local disk instead of
# resolving an unpinned CUDA build (see pyproject.toml for every pin).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

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
