# learnat developer targets. SHARED points at the benchmark data (Spider/BIRD) beside the checkout.
PYTHON ?= python3
SHARED ?= ../shared
TORCH_PIN := torch==2.13.0

.PHONY: install test test-slow lint bench demo clean

install:
	$(PYTHON) -m pip install $(TORCH_PIN)
	$(PYTHON) -m pip install -e '.[ml,models,dev]'

test:
	$(PYTHON) -m pytest

test-slow:
	$(PYTHON) -m pytest -m slow

lint:
	$(PYTHON) -m ruff check learnat_cli commands tests benchmarks

bench:
	$(PYTHON) benchmarks/run_all.py --shared $(SHARED)

demo:
	learnat ask --db samples/bookshop.sqlite "How many books did each author write?"

clean:
	rm -rf build dist *.egg-info .pytest_cache
