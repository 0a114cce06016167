# The two commands: `make demo` runs the main job on embedded defaults, `make test` runs the tests.
# Both set everything up on a fresh machine: the virtual environment, and the servers the tests use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VM     := .build/bin/victoria-metrics
EXTRAS := platform,edge,dev

.PHONY: demo test install servers bench clean

DURATION ?= 60

demo: $(STAMP)
	$(BIN)/eddyline demo --duration $(DURATION) --bad-events 25 --summary-json demo-summary.json

test: $(STAMP) $(VM)
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

servers: $(VM)

$(VM):
	bash tests/servers/build_victoriametrics.sh

clean:
	rm -rf $(VENV) .build .pytest_cache
