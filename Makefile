# Two commands do all the set-up on a fresh machine:
#   make chat   - create .venv, install nanochat-py, chat with a model (SOURCE=... picks which)
#   make test   - create .venv with the dev tools, run ruff and the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCE ?= hf:karpathy/nanochat-d32

.PHONY: chat test lint install clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of torch, before anything can pull a multi-GB CUDA build (Linux only)
	if [ "$$(uname -s)" = Linux ]; then $(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

chat: install
	$(VENV)/bin/nanochat-py chat --source $(SOURCE)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
