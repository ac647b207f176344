# turnout: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUF    := .tools/node_modules/.bin/buf
CONFIG ?=

.PHONY: setup system-deps run test soak bench bench-routing bench-routing-real proto lint clean demo test-real examples

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/turnout serve $(if $(CONFIG),--config $(CONFIG))

# redis-server, prometheus, nginx, npm, cmake, g++, Go and its gRPC packages: installed with apt-get when missing.
system-deps:
	scripts/system-deps.sh

test: setup system-deps
	$(PY) -m pytest -q

# Long scenarios that print their figures: the 20,000-request fuzz, starvation, retry budget, reloads under load.
soak: setup
	$(PY) -m pytest -q -s -m soak

# A real model (SmolLM2-135M on llama.cpp's own llama-server) behind the gateway. The server is
# built by ../shared/scripts/llama-server.sh (needs cmake and g++; ~6-10 min on 2 cores the first
# time) into ~/.cache/turnout-llama, outside the checkout; later runs take seconds.
demo: setup
	demo/run.sh

test-real: setup
	$(PY) -m tests.real.llama >/dev/null
	$(PY) -m pytest -q -m real_model -p no:cacheprovider

# Needs Debian's nginx (apt-get install nginx-light); installs LiteLLM into .bench/ on first run.
bench: setup
	@command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light; }
	$(PY) -m bench.run

# Routing strategies on simulated model servers (bench/sim), side by side, each run 3 times (medians and
# the range of the ratios): ~20 min on 2 cores. One quick run: `.venv/bin/python -m bench.routing`.
bench-routing: setup
	$(PY) -m bench.routing --repeat 3

# least_used vs adaptive on two real llama.cpp servers with SmolLM2; builds them on first use
# with ../shared/scripts/llama-server.sh (shared/ beside the checkout; ~10 min, cmake and g++).
bench-routing-real: setup
	$(PY) -m bench.routing_real

# The one place stubs are generated: Python into turnout/v1, Go into gen/go and TypeScript into
# gen/ts (buf.gen.yaml); tests/test_proto_stubs.py and tests/e2e/test_clients.py fail when they are stale.
proto: setup system-deps $(BUF)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/turnout/v1/*.proto
	rm -rf gen/go/turnout gen/ts
	$(BUF) generate

# buf and protoc-gen-es; reinstalled when .tools/package.json changes.
$(BUF): .tools/package.json
	cd .tools && npm install --no-audit --no-fund --silent
	touch $@

# buf breaking compares the proto with the previous commit (BREAKING_AGAINST to override),
# so an incompatible change to the published contract fails the build.
BREAKING_AGAINST ?= .git\#ref=HEAD~1

lint: setup $(BUF)
	$(BUF) lint
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then $(BUF) breaking --against '$(BREAKING_AGAINST)'; \
	else echo "buf breaking: no previous commit to compare with"; fi
	$(VENV)/bin/ruff check .

# The Node client in examples/node (tests/e2e/test_clients.py runs this itself when needed).
examples:
	cd examples/node && npm ci --no-audit --no-fund --silent

clean:
	rm -rf $(VENV) .tools/node_modules examples/node/node_modules .demo .pytest_cache
