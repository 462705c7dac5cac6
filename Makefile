# Two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning made torch 3-20x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint install clean benchmark benchmark-export fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch/torchvision pinned exactly here (these builds lie on the project machines' disk);
# pyproject.toml keeps looser ranges for users.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/captionlens demo --out outputs/demo

# Lint (ruff: pyflakes, pycodestyle, import order, bugbear), types (mypy on src/) and the layers every module
# may import from (import-linter, pyproject.toml's contract) before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest -q

# Every file reader fuzzed past `make test`'s smoke run (tests/fuzz: 30 examples a test, always the same):
# FUZZ_EXAMPLES new examples a test, then the table of inputs per reader and outcome (README's "Fuzzing").
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	CAPTIONLENS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CAPTIONLENS_FUZZ_STATS=outputs/fuzz/stats.md \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_explain.py --repeats 3

# `captionlens explain` over many images against the engine alone, and its peak memory.
benchmark-export: $(STAMP)
	$(BIN)/python benchmarks/export_bench.py --repeats 5 --memory

clean:
	rm -rf $(VENV) outputs
