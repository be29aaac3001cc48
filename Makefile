# Two commands do all the set-up on a fresh machine:
#   make chat   - create .venv, install nanochat-py, chat with the built-in model (SOURCE=... picks another)
#   make test   - create .venv with the dev tools (and Debian's chromium), run ruff and the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCE ?=

.PHONY: chat test lint install browser clean model

# Always into an emptied venv (--clear): pip trusts what an interrupted install left behind (a set-up killed
# mid-way left ruff half-written, and the next install took it as installed); the marker, written last, says done.
$(VENV)/.installed: pyproject.toml
	python3 -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of torch, before anything can pull a multi-GB CUDA build (Linux only)
	if [ "$$(uname -s)" = Linux ]; then $(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# the CPU decode kernels, compiled for this machine into this venv (a no-op when built; runs never build them)
install: $(VENV)/.installed
	$(PY) -m nanochat_py.kernels || echo "the CPU kernels did not build: decoding uses plain torch ops (slower)"

chat: install
	$(VENV)/bin/nanochat-py chat $(if $(SOURCE),--source $(SOURCE))

# rebuild the built-in model from Debian text + generated data (about 55 minutes on 2 cores; see README)
model: install
	$(PY) recipe/make_model.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks recipe
	$(VENV)/bin/ruff format --check src tests benchmarks recipe

# Debian's chromium for the web UI test (never a downloaded browser); without root/apt that test is skipped
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed: the web UI test will be skipped"

test: lint browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
