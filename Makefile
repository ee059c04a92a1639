# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# setuptools' note on flat-layout editable installs ("Editable installation ... be careful with folders")
	@# is information only: hidden, so that a quiet install prints nothing but real problems
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/convpipe demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --timeout 600

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "" --timeout 1800

bench: $(STAMP)
	$(BIN)/convpipe bench

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache .hypothesis
