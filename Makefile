# handseg: two commands for a newcomer.
#   make demo   set up .venv and run the demo (synthetic data -> trained model -> report)
#   make test   set up .venv, lint with ruff, run the tests (make test-slow: the slow ones)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow lint format demo clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,hands,serve]'
	$(BIN)/python -c 'from handseg.infer.hand_models import fetch_hand_models as f; f()'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Debian's chromium for the page test (apt, where missing)
browser:
	./.ci/chromium

# -rsx: the summary names every skipped and expected-to-fail test and its reason
test: lint browser
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -rsx

# the tests marked slow (kill/resume storms, the real network under the CLI fuzz); CI runs both
test-slow: setup browser
	$(BIN)/python -m pytest -q -rsx -m slow

demo: setup
	$(BIN)/handseg demo --out demo-output

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
