# learnat developer targets. SHARED points at the benchmark data (Spider/BIRD) beside the checkout.
PYTHON ?= python3
SHARED ?= ../shared
TORCH_PIN := torch==2.13.0

.PHONY: install test test-slow lint typecheck check bench loop demo clean

install:
	$(PYTHON) -m pip install $(TORCH_PIN)
	$(PYTHON) -m pip install -e '.[all]'

test:
	$(PYTHON) -m pytest

test-slow:
	$(PYTHON) -m pytest -m slow

lint:
	$(PYTHON) -m ruff check learnat_cli commands tests benchmarks samples

typecheck:
	$(PYTHON) -m mypy

# What .ci/run does after installing: lint, type check, tests.
check: lint typecheck test

bench:
	$(PYTHON) benchmarks/run_all.py --shared $(SHARED)

# The LearNAT loop (issue 15): decompose -> build-pairs -> sft -> mdpo (+ plain-DPO ablation) -> ask -> eval, into
# $(RUNS)/$(NAME)/ with results.md/json and a PNG; every step resumes. SCALE=tiny: the tiny test model, minutes.
# BUDGET: seconds per training stage per run (then `make loop` again continues from the checkpoints).
SCALE ?= full
NAME ?=
TRAIN ?= 2000
PAIRS ?= 1200
EVAL ?= 300
BUDGET ?=
STUDENT ?=
GPUS ?= 1
TEACHER ?= ast
CONFIGS ?=
SCHEMA ?= sql
LORA_LAYERS ?=
RUNS ?= runs
CARRY ?=
loop:
	$(PYTHON) benchmarks/loop.py --scale $(SCALE) --spider $(SHARED)/spider --train $(TRAIN) --pairs $(PAIRS) \
		--eval $(EVAL) --gpus $(GPUS) --teacher $(TEACHER) --runs $(RUNS) $(if $(NAME),--name $(NAME)) \
		--schema-format $(SCHEMA) $(if $(BUDGET),--budget $(BUDGET)) $(if $(STUDENT),--student $(STUDENT)) \
		$(if $(CONFIGS),--configs $(CONFIGS)) $(if $(LORA_LAYERS),--lora-layers $(LORA_LAYERS)) \
		$(if $(SHIP),--ship) $(if $(CARRY),--carry $(CARRY)) $(if $(UNALIAS),--unalias) \
		$(if $(REASK),--reask $(REASK))

# The GPU path on one CUDA GPU (< 8 min, one table); without a GPU a dry run with the tiny model, exit 0.
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py

demo:
	learnat ask --db samples/bookshop.sqlite "How many books did each author write?"

clean:
	rm -rf build dist *.egg-info .pytest_cache
