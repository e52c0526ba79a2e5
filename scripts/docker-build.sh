#!/usr/bin/env bash
# Build the container image gemma-rs:latest (Dockerfile at the repo root):
# a statically linked `gemma` (glibc, crt-static) on an empty base, so no
# base image is pulled. Stages the context in target/docker-context.
#   scripts/docker-build.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-gemma-rs:latest}"
TRIPLE=x86_64-unknown-linux-gnu
GEMMA_GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p gemma-cli --target "$TRIPLE"
BIN="target/$TRIPLE/release/gemma"
LDD=$(ldd "$BIN" 2>&1 || true)
if echo "$LDD" | grep -q "=>"; then
  echo "error: $BIN is dynamically linked" >&2
  exit 1
fi
CTX=target/docker-context
rm -rf "$CTX" && mkdir -p "$CTX"
cp "$BIN" "$CTX/gemma"
strip "$CTX/gemma" 2>/dev/null || true
CA="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
cp "$CA" "$CTX/ca-certificates.crt"
echo "gemma:x:65532:65532:gemma:/data:/usr/bin/gemma" > "$CTX/passwd"
cp Dockerfile "$CTX/Dockerfile"
docker build -q -t "$TAG" "$CTX" >/dev/null
echo "built $TAG: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}')"
