#!/usr/bin/env bash
# `make demo`: a real model behind turnout, all on 127.0.0.1.
# 1. llama.cpp's own server (llama-server, built once by ../shared/scripts/llama-server.sh into
#    ~/.cache/turnout-llama) with SmolLM2-135M as `smollm2`, two slots, on a free port
#    (tests/real/llama.py, the same code the real-model tests use)
# 2. `turnout serve --config demo/turnout.yaml` in front of it (free ports too)
# 3. `turnout chat -v PROMPT` (arguments, else $PROMPT: `make demo PROMPT="..."`), streamed to
#    this terminal; both servers stop on exit (also on Ctrl-C).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROMPT="${*:-${PROMPT:-In two sentences: why is the sky blue?}}"
LOGS="$ROOT/.demo/logs"
PY="$ROOT/.venv/bin/python"
TURNOUT="$ROOT/.venv/bin/turnout"
[[ -x "$TURNOUT" ]] || { echo "demo: run 'make setup' first ($TURNOUT is missing)" >&2; exit 1; }
mkdir -p "$LOGS"

echo "demo: llama-server and SmolLM2 (the first run builds them: ~6-10 min on 2 cores) ..."
"$PY" -m tests.real.llama >/dev/null
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GATEWAY_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
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
"$PY" -m tests.real.llama serve 2 >"$LOGS/llama.url" 2>"$LOGS/llama.err" &
pids+=($!)
wait_for "llama-server" "$!" "$LOGS/llama.err" 150 grep -q "^http" "$LOGS/llama.url"
export LLAMA_URL="$(head -n 1 "$LOGS/llama.url")"
echo "demo: llama-server on $LLAMA_URL serving SmolLM2-135M-Instruct as 'smollm2' (log: $LOGS/llama-server-*.log)"

echo "demo: turnout serve --config demo/turnout.yaml on $TURNOUT_ADDR (log: $LOGS/turnout.log)"
"$TURNOUT" serve --config demo/turnout.yaml --listen "$TURNOUT_ADDR" --metrics-listen "127.0.0.1:$METRICS_PORT" \
  >"$LOGS/turnout.log" 2>&1 &
pids+=($!)
wait_for "turnout" "$!" "$LOGS/turnout.log" 30 grep -q "listening on" "$LOGS/turnout.log"
echo "demo: both up in $((SECONDS - t0)) s"

echo "\$ turnout models"
"$TURNOUT" models
echo "\$ turnout chat -v \"$PROMPT\""
"$TURNOUT" chat -v "$PROMPT"
