#!/usr/bin/env bash
# The fuzz targets compile: fuzz/ is its own crate outside the workspace,
# built by `cargo +nightly fuzz` (scripts/fuzz.sh), so nothing else would
# notice when a parser's API changes under it. `cargo check` on the stable
# toolchain type-checks the same code (the fuzz_target! bodies and the
# parsers they call; libFuzzer's runtime is linked only by cargo fuzz).
# CI runs it. Its build goes to target/fuzz-check.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="$PWD/target/fuzz-check" cargo check -q --manifest-path fuzz/Cargo.toml --bins --locked
echo "fuzz targets compile ($(grep -c '^\[\[bin\]\]' fuzz/Cargo.toml) targets)"
