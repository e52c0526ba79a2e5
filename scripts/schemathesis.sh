#!/usr/bin/env bash
# Property-based API testing of `gemma serve` against its own description:
# serve the real model on a loopback port, fetch GET /openapi.json, and let
# schemathesis (PyPI, installed into a cache venv) generate requests for
# every route — valid ones from the schemas and invalid ones around them —
# checking that no answer is a 5xx and every answer matches the documented
# status codes, content types and response schemas; then
# tools/openapi_stream_check.py validates the JSON inside streamed events
# (which schemathesis sees only as strings). Not part of CI (a few minutes
# against the real model).
#   scripts/schemathesis.sh [MODEL] [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
MAX_EXAMPLES="${2:-${MAX_EXAMPLES:-30}}"
CACHE="${GEMMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-rs}"
VENV="$CACHE/venv-schemathesis"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "installing schemathesis into $VENV..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis>=4,<5'
fi
cargo build --release -q -p gemma-cli
PORT=$(free_port)
LOG=$(mktemp)
REPORT=$(mktemp -d)
# Short generations keep the run bounded: every request fits in 128 tokens.
target/release/gemma serve -m "$MODEL" --port "$PORT" --max-total-tokens 128 --max-new-tokens 16 --max-queue 64 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$LOG" "$REPORT"' EXIT
wait_for_health "http://127.0.0.1:$PORT" || { echo "the server did not start:" >&2; cat "$LOG" >&2; exit 1; }
set +e
# (run from the report folder: schemathesis keeps its own state in ./.schemathesis)
(cd "$REPORT" && exec timeout 1500 "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples "$MAX_EXAMPLES" --workers 1 --seed 42 \
  --request-timeout 60 --suppress-health-check too_slow,filter_too_much --no-color \
  --generation-database none --report ndjson --report-dir "$REPORT")
rc=$?
echo "== the JSON inside streamed events, and rarely generated combinations, against the same description"
"$VENV/bin/python" tools/openapi_stream_check.py "http://127.0.0.1:$PORT" || rc=1
set -e
kill -0 $PID 2>/dev/null || { echo "the server died during the run:" >&2; tail -20 "$LOG" >&2; exit 1; }
echo "server log: $(grep -c '"status":200' "$LOG" || true) answered 200, $(grep -c '"status":4' "$LOG" || true) refused 4xx, $(grep -c '"status":5' "$LOG" || true) 5xx"
exit $rc
