#!/usr/bin/env bash
# The built-in chat page in a real browser: serve the real model with an API
# key on a loopback port, drive GET / in headless Chromium (Debian's
# `chromium`, installed if missing) with playwright-core from npm, check
# streaming, multi-turn history, the stop button and tokens/s, and write a
# screenshot (docs/chat-page.png); then the attach button on the tiny vision
# fixture (target/chat-page-image.png). Not part of CI (it needs a browser).
#   scripts/check-chat-page.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
CACHE="${GEMMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-rs}"
NODE_DIR="$CACHE/node-chat"
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM" ]; then
  echo "installing Debian's chromium..." >&2
  apt-get install -y -q chromium >/dev/null
  CHROMIUM=$(command -v chromium)
fi
if [ ! -d "$NODE_DIR/node_modules/playwright-core" ]; then
  mkdir -p "$NODE_DIR"
  (cd "$NODE_DIR" && npm init -y >/dev/null && npm install --silent playwright-core@1)
fi
cargo build --release -q -p gemma-cli
KEY="page-check-key"
PORT=$(free_port)
LOG=$(mktemp)
GEMMA_API_KEY="$KEY" target/release/gemma serve -m "$MODEL" --port "$PORT" 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
wait_for_health "http://127.0.0.1:$PORT" || { echo "the server did not start:" >&2; cat "$LOG" >&2; exit 1; }
cp tools/browser/chat_page_check.mjs "$NODE_DIR/"
timeout 300 node "$NODE_DIR/chat_page_check.mjs" "http://127.0.0.1:$PORT" "$KEY" "$CHROMIUM" "$PWD/docs/chat-page.png"

# Images: the tiny vision fixture, the attach button, an image sent and resent.
kill $PID 2>/dev/null || true
PORT=$(free_port)
target/release/gemma serve -m testdata/tiny-gemma3-vision --port "$PORT" 2>"$LOG" &
PID=$!
wait_for_health "http://127.0.0.1:$PORT" || { echo "the vision server did not start:" >&2; cat "$LOG" >&2; exit 1; }
cp tools/browser/chat_page_image_check.mjs "$NODE_DIR/"
timeout 300 node "$NODE_DIR/chat_page_image_check.mjs" "http://127.0.0.1:$PORT" "$CHROMIUM" "$PWD/testdata/tiny-gemma3-vision/images/photo_120x80.jpg" "$PWD/target/chat-page-image.png"
