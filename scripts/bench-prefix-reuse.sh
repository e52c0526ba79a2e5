#!/usr/bin/env bash
# Time to first token of a 10-turn chat whose history grows to ~4k tokens,
# with the prefix cache (default) and without it (--prefix-cache-mb 0), on
# the real model; prints a table per turn. Answers must be identical.
#   scripts/bench-prefix-reuse.sh [MODEL] [TURNS=10] [WORDS=340]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
TURNS="${2:-10}"; WORDS="${3:-340}"
cargo build --release -q -p gemma-cli
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
for mode in on off; do
  PORT=$(free_port)
  mb=256; [ "$mode" = off ] && mb=0
  target/release/gemma serve -m "$MODEL" --port "$PORT" --prefix-cache-mb "$mb" --max-input-tokens 8192 --max-total-tokens 8192 2>"$OUT/$mode.log" &
  PID=$!
  wait_for_health "http://127.0.0.1:$PORT" || { cat "$OUT/$mode.log" >&2; exit 1; }
  python3 tools/bench_prefix_reuse.py "http://127.0.0.1:$PORT" "$TURNS" "$WORDS" > "$OUT/$mode.jsonl"
  kill "$PID"; wait "$PID" 2>/dev/null || true
done
python3 - "$OUT" <<'PY'
import json, sys
on = [json.loads(l) for l in open(f"{sys.argv[1]}/on.jsonl")]
off = [json.loads(l) for l in open(f"{sys.argv[1]}/off.jsonl")]
print("| turn | prompt tokens | reused | TTFT with reuse (s) | TTFT without (s) | speedup |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for a, b in zip(on, off):
    print(f"| {a['turn']} | {a['prompt_tokens']} | {a['cached_tokens']} | {a['ttft_s']:.3f} | {b['ttft_s']:.3f} | {b['ttft_s'] / a['ttft_s']:.1f}x |")
same = all(a["answer"] == b["answer"] for a, b in zip(on, off))
print(f"\nanswers identical with and without reuse: {same}")
sys.exit(0 if same else 1)
PY
