# The two commands a user needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo serve-demo test lint bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet -e . --group dev
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

system-deps:
	.ci/system-deps

test: lint system-deps
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) examples/documents/demo.py

serve-demo: $(STAMP)
	$(VENV)/bin/asyncflow serve examples/service/service.py:make

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .asyncflow service-output .mypy_cache .pytest_cache .ruff_cache
