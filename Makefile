# QIZ: the two commands are `make demo` and `make test`. Both create .venv when it is missing,
# install the pinned dependencies (constraints.txt) and are safe to run again.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,slhdsa]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/qiz demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# The dashboard's browser test drives Debian's chromium (no browser download by Playwright).
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get install -y --no-install-recommends chromium \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }; }

test: lint browser
	$(BIN)/python -m pytest -q

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt bench/build_qokit.sh
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,slhdsa,bench]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt qokit
	bash bench/build_qokit.sh $(BIN)/python
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
