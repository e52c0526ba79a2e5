#!/usr/bin/env bash
# The Python package end to end: build the abi3 wheel with maturin (pinned,
# in its own venv), install it into a fresh venv with numpy and pytest, and
# run python/tests against the CLI, transformers' goldens and the real
# model. Prints the wheel's size and the build time.
#   scripts/check-python.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BUILD=$(pinned_venv "$(gemma_cache)/venv-maturin" maturin)
cargo build --release -q -p gemma-cli
OUT=target/wheels
rm -rf "$OUT"
t0=$(date +%s)
"$BUILD/bin/maturin" build --release -q -o "$OUT"
t1=$(date +%s)
WHEEL=$(ls "$OUT"/gemma_rs-*.whl)
echo "wheel: $WHEEL, $(du -h "$WHEEL" | cut -f1), built in $((t1 - t0)) s"
# A fresh venv: nothing but the wheel, its dependency (numpy) and pytest.
VENV=$(mktemp -d /tmp/gemma-rs-python-XXXX)
trap 'rm -rf "$VENV"' EXIT
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -c scripts/python-constraints.txt "$WHEEL" pytest
# Run from outside the source tree, so the installed package is what imports.
ROOT=$(pwd)
export GEMMA_BIN="$ROOT/target/release/gemma" GEMMA_TESTDATA="$ROOT/testdata"
if [ -n "${1:-}" ]; then export GEMMA_MODEL="$1"; fi
(cd "$VENV" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/python/tests")
