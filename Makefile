# hybnn — set-up, demo, tests. Every target builds .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/mnist),)
export HYBNN_DATA ?= $(SHARED_DATA)
endif
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: setup demo test lint reproduce bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/hybnn demo

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src kernels tests benchmarks

reproduce: setup
	$(BIN)/hybnn reproduce

clean:
	rm -rf $(VENV) runs .pytest_cache
