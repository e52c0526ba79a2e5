#!/usr/bin/env bash
# Perplexity cost and resident memory of each quantization type on the real
# model: `gemma quantize` to GGUF, and `--dtype` conversion at load time.
# Perplexity is `gemma perplexity --file testdata/llama_cpp/ppl_long.txt --ctx 512`
# (7,735 tokens: on fewer, 8-bit rounding noise of ~0.5% blurs the ranking);
# memory is the peak RSS of that run (/usr/bin/time -v).
# Note: the only real checkpoint reachable here is already Q4_K_M, so every
# type is re-quantized from it; the costs include that first quantization.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$(scripts/fetch-model.sh)"
cargo build --release -q
G=target/release/gemma
OUT="${TMPDIR:-/tmp}/gemma-quant-report"
mkdir -p "$OUT"
TEXT=testdata/llama_cpp/ppl_long.txt
run() { # label, model, extra args...
  local label="$1" model="$2"; shift 2
  local log="$OUT/time.log"
  local json
  json=$(/usr/bin/time -v -o "$log" "$G" perplexity -m "$model" --file "$TEXT" --ctx 512 --json "$@" 2>/dev/null)
  local rss size
  rss=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$log")
  size=$(du -m "$model" | cut -f1)
  printf "| %-22s | %6s MiB | %s | %6.1f MiB |\n" "$label" "$size" "$(echo "$json" | python3 -c 'import json,sys; print("%8.4f" % json.load(sys.stdin)["ppl"])')" "$(echo "$rss / 1024" | bc -l)"
}
echo "| model | file | perplexity | peak RSS |"
echo "|---|---|---|---|"
run "original Q4_K_M" "$MODEL"
for t in q8_0 q6_k q5_k_m q4_k_m q4_0 q3_k_m f16; do
  "$G" quantize -m "$MODEL" -t "$t" -o "$OUT/$t.gguf" 2>/dev/null
  run "quantize --type $t" "$OUT/$t.gguf"
done
for d in f32 q8_0 q4_k; do
  run "--dtype $d (at load)" "$MODEL" --dtype "$d"
done
