# Fresh-machine contract: only python, pip and venv are needed.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch is what this machine's pip serves quickly; users elsewhere override,
# e.g. `make install TORCH_SPEC='torch>=2.2'` or TF_SPEC='tensorflow[and-cuda]'.
TORCH_SPEC ?= torch==2.13.0
TF_SPEC ?= tensorflow-cpu==2.21.0
# xgboost: the CUDA-capable wheel (the GPU tests need it); `make install XGBOOST=xgboost-cpu`
# builds a CPU-only environment without nvidia-nccl-cu12 (about 470 MB less).
XGBOOST ?= xgboost
EXTRAS ?= test,bench,docs,spark,$(XGBOOST)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench docs clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH_SPEC)" "$(TF_SPEC)" -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dasktrain demo --out report/

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/asv machine --yes
	$(BIN)/asv run --python=same --quick --show-stderr

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build report .asv
