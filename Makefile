# QIZ: the two commands are `make demo` and `make test`. Both create .venv when it is missing,
# install the pinned dependencies (constraints.txt) and are safe to run again.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean browser netns fuzz

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

# The NAT traversal tests build networks in namespaces (tests/netns.py, docs/netns.md): they
# need iproute2's ip and nftables' nft, from Debian, and root (they skip without it).
netns:
	@[ -x /usr/sbin/ip ] && [ -x /usr/sbin/nft ] || { $(SUDO) apt-get install -y --no-install-recommends iproute2 nftables \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends iproute2 nftables; }; }

test: lint browser netns
	$(BIN)/python -m pytest -q

# The parsers' fuzz targets (tests/fuzz) with the long hypothesis profile: FUZZ_EXAMPLES per
# target (`make test` runs them briefly). Failures are kept in .hypothesis/ and replayed first.
FUZZ_EXAMPLES ?= 4000

fuzz: $(STAMP)
	QIZ_FUZZ_PROFILE=fuzz-long QIZ_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(BIN)/python -m pytest -q --timeout=0 --hypothesis-show-statistics tests/fuzz

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
