#!/usr/bin/env bash
# Speculative decoding (prompt lookup) against llama.cpp's
# (llama-cpp-python's LlamaPromptLookupDecoding) on the real model: a code
# file rewritten with type hints and a free-form continuation (greedy), and
# the code task as 4 concurrent streams to `gemma serve`; prints tok/s and
# ratios and fails if our output changes with speculation.
#   scripts/bench-speculative.sh [MODEL] [TOKENS=200] [ROUNDS=2] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
VENV=$(llama_cpp_venv)
cargo build --release -q -p gemma-cli
"$VENV/bin/python" tools/bench_speculative.py target/release/gemma "$MODEL" "${2:-200}" "${3:-2}" "${4:-2}"
