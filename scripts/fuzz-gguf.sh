#!/usr/bin/env bash
# Fuzz the GGUF parser for a bounded time (default 60 s), seeded with the
# built-in sample file and the default model's header if it is present.
# A crashing input is saved as fuzz-crash.gguf: turn it into a regression
# test in crates/gemma-formats/tests/gguf.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
SEEDS=()
MODEL="${GEMMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-rs}/models/gemma-3-270m-q4_k_m.gguf"
[ -f "$MODEL" ] && SEEDS+=("$MODEL")
cargo run --release -q -p gemma-formats --example fuzz_gguf -- "$SECS" "${SEEDS[@]}"
