# Two commands for a newcomer: `make demo` and `make test`. Both create or refresh .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned in the same pip command as everything that needs it, or pip fetches gigabytes.
PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint docs bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,sdxl,export,serve,scale]" $(PINS)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/dualpatch demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

# The docs site into site/ (make test builds it too, in tests/docs, with every warning an error).
docs: install
	$(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) benchmarks/kolektorsdd.py

clean:
	rm -rf runs/demo .pytest_cache site
