# turnout: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUF    := .tools/node_modules/.bin/buf
CONFIG ?=

.PHONY: setup run test soak bench proto lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/turnout serve $(if $(CONFIG),--config $(CONFIG))

test: setup
	$(PY) -m pytest -q

soak: setup
	$(PY) -m pytest -q -m soak

# Needs Debian's nginx (apt-get install nginx-light); installs LiteLLM into .bench/ on first run.
bench: setup
	@command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light; }
	$(PY) -m bench.run

# The one place stubs are generated; tests/test_proto_stubs.py fails when they are stale.
proto: setup
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/turnout/v1/*.proto

$(BUF):
	cd .tools && npm install --no-audit --no-fund --silent

# buf breaking compares the proto with the previous commit (BREAKING_AGAINST to override),
# so an incompatible change to the published contract fails the build.
BREAKING_AGAINST ?= .git\#ref=HEAD~1

lint: setup $(BUF)
	$(BUF) lint
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then $(BUF) breaking --against '$(BREAKING_AGAINST)'; \
	else echo "buf breaking: no previous commit to compare with"; fi
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .tools/node_modules .pytest_cache
