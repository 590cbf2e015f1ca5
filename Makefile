# The two commands the README opens with: `make demo` and `make test`. Both set up everything
# they need on a fresh machine; `make install` only installs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := test,idc,neural,dask

.PHONY: install demo test test-tools lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: install
	$(BIN)/python -m wsitranscode.demo

# Debian's chromium renders the HTML report in a test; its absence only skips that test.
test-tools:
	@command -v chromium >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: chromium not installed; the HTML rendering test will be skipped"; }

test: install test-tools
	$(BIN)/ruff check wsitranscode tests benchmarks
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/recode_throughput.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
