# The two commands: `make demo` runs the main job on embedded defaults, `make test` runs the tests.
# Both set everything up on a fresh machine: the virtual environment, and the servers the tests use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VM     := .build/bin/victoria-metrics
# S3 on disk for the durable broker's tests and the chaos bench (npm; Node 20 is enough).
S3RVER := .build/s3rver/node_modules/.bin/s3rver
S3RVER_VERSION := 3.7.1
SYSTEM := .build/system.stamp
# Debian packages the tests drive: a browser for the live page, the compose CLI to validate docker/, openssl for TLS,
# Mosquitto (broker and clients) for the MQTT bridge.
APT_PACKAGES := chromium docker-compose openssl mosquitto mosquitto-clients
EXTRAS := platform,edge,audio,dev

.PHONY: demo test install servers bench clean

DURATION ?= 60
SUMMARY  ?= demo-summary.json

demo: $(STAMP)
	$(BIN)/eddyline demo --duration $(DURATION) --bad-events 25 --summary-json $(SUMMARY)

# Two workers, one test file each at a time (module fixtures run once); most integration tests wait on servers.
TEST_WORKERS ?= 2

test: $(STAMP) $(VM) $(S3RVER) $(SYSTEM)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# A fresh checkout (a clone, a git worktree) gives pyproject.toml a new time, so the stamp holds its hash: only a
# changed file reinstalls. A linked .venv belongs to the checkout it lives in (an editable install points at one
# checkout): it is never reinstalled from here, and a pyproject.toml that differs from that checkout's stops make.
$(STAMP): pyproject.toml
	@if [ -L $(VENV) ]; then home=$$(dirname "$$(readlink -f $(VENV))"); \
	  cmp -s pyproject.toml "$$home/pyproject.toml" || { \
	    echo "error: .venv links to $$home/.venv, installed from another pyproject.toml: run make install in $$home" >&2; exit 2; }; \
	elif [ -x $(BIN)/python ] && [ "$$(cat $@ 2>/dev/null)" = "$$(sha256sum pyproject.toml)" ]; then touch $@; \
	else set -e; test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install --quiet --upgrade pip; \
	  $(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'; \
	  sha256sum pyproject.toml > $@; fi

install: $(STAMP)

servers: $(VM) $(S3RVER) $(SYSTEM)

$(SYSTEM): Makefile
	@mkdir -p .build
	dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); }
	touch $@

$(VM):
	bash tests/servers/build_victoriametrics.sh

$(S3RVER):
	command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	mkdir -p .build/s3rver
	npm install --prefix .build/s3rver --no-audit --no-fund --omit=dev s3rver@$(S3RVER_VERSION)

clean:
	rm -rf $(VENV) .build .pytest_cache
