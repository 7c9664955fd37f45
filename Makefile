# Two commands set up a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mitoscope-installed
DEMO_OUT ?= mitoscope-demo

.PHONY: demo test lint browser clean models

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mitoscope demo --out $(DEMO_OUT)

# Retrain the bundled models from ../shared/data on the CPU and rewrite their weights, contracts and cards
# (src/mitoscope/pretrained/) with the benchmarks behind the cards (benchmarks/results/): about 3 h on 2 cores.
models: $(STAMP)
	$(PY) benchmarks/make_models.py

# Headless Chromium for the HTML-report test (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: $(STAMP) browser lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
