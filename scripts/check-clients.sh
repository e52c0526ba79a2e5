#!/usr/bin/env bash
# Serve the real model and drive it with the official `openai` and
# `huggingface_hub` Python clients (tools/clients_check.py), with an API key;
# then SIGTERM the server and require a clean exit (code 0); then the thinking
# mode on testdata/tiny-gemma4-it (tools/clients_check_thinking.py).
#   scripts/check-clients.sh [MODEL]
# The clients are installed from PyPI into $CLIENTS_VENV
# (default ~/.cache/gemma-rs/venv-clients) once, at the versions of
# scripts/python-constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
VENV=$(pinned_venv "${CLIENTS_VENV:-$(gemma_cache)/venv-clients}" openai huggingface_hub)
cargo build --release -q -p gemma-cli
KEY="check-$RANDOM$RANDOM"
LOG="$(mktemp)"
# serve ARGS...: start `gemma serve ARGS` on a free loopback port (PORT, PID) and wait for /health.
serve() {
  PORT=$(free_port)
  GEMMA_API_KEY="$KEY" target/release/gemma serve "$@" --port "$PORT" --shutdown-grace 5 2>"$LOG" &
  PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  if ! wait_for_health "http://127.0.0.1:$PORT" 150 "$PID"; then
    echo "FAILED: gemma serve $* never became healthy on port $PORT; its log:" >&2
    tail -30 "$LOG" >&2
    exit 1
  fi
}
serve -m "$MODEL"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v1/models")
[ "$code" = 401 ] || { echo "FAILED: /v1/models without the key gave $code, want 401" >&2; exit 1; }
"$VENV/bin/python" tools/clients_check.py "http://127.0.0.1:$PORT" "$KEY"
kill -TERM $PID
status=0
wait $PID || status=$?
trap - EXIT
[ "$status" = 0 ] || { echo "FAILED: the server exited with $status after SIGTERM" >&2; cat "$LOG" >&2; exit 1; }
echo "server shut down cleanly on SIGTERM"

# Thinking mode (Gemma 4 protocol) on the tiny fixture whose greedy answer thinks.
serve -m testdata/tiny-gemma4-it --enable-thinking
"$VENV/bin/python" tools/clients_check_thinking.py "http://127.0.0.1:$PORT" "$KEY"
kill -TERM $PID
wait $PID || true
trap - EXIT

# Images (Gemma 3 vision) on the tiny multimodal fixture: the official
# clients send an image as an OpenAI image_url data URL and a TGI markdown
# image; the answer must be the CLI's (`gemma generate --chat --image`),
# the prompt Gemma3Processor's length (42 tokens, checked with transformers 5.x).
IMG=testdata/tiny-gemma3-vision/images/photo_120x80.jpg
WANT=$(target/release/gemma generate -m testdata/tiny-gemma3-vision --chat --image "$IMG" -p "Describe this image." -n 8 -t 0 2>/dev/null)
serve -m testdata/tiny-gemma3-vision
"$VENV/bin/python" tools/clients_check_vision.py "http://127.0.0.1:$PORT" "$KEY" "$IMG" "$WANT" 42
kill -TERM $PID
wait $PID || true
trap - EXIT

# Images on the tiny Gemma 4 fixture: the same checks with Gemma 4's turn
# markup; the prompt is Gemma4Processor's length (99 tokens: a 120x84 image
# is 70 soft tokens at the fixture's budget; checked with transformers 5.25).
IMG=testdata/tiny-gemma4-vision/images/exact_120x84.png
WANT=$(target/release/gemma generate -m testdata/tiny-gemma4-vision --chat --image "$IMG" -p "Describe this image." -n 8 -t 0 2>/dev/null)
serve -m testdata/tiny-gemma4-vision
"$VENV/bin/python" tools/clients_check_vision.py "http://127.0.0.1:$PORT" "$KEY" "$IMG" "$WANT" 99 gemma4
kill -TERM $PID
wait $PID || true
trap - EXIT
