#!/usr/bin/env bash
# lm-evaluation-harness as a real client of `gemma serve`, against
# `gemma eval` and llama.cpp on the same items (a check, not part of CI:
# the venvs come from PyPI).
#   scripts/lm-eval-check.sh [MODEL.gguf] [PORT=8093]
# 1. installs lm-eval[api] into $LMEVAL_VENV (default ~/.cache/gemma-rs/venv-lmeval);
# 2. serves the model and runs the committed tasks (tools/lm_eval/*.yaml over
#    testdata/eval/*.jsonl) through lm-eval's `local-completions` model with
#    the server's own tokenizer routes (tokenizer_backend=remote: no Hub
#    download), timing it;
# 3. runs `gemma eval` on the same files, timing it;
# 4. prints both accuracies side by side, the per-item log-likelihood
#    difference between the two, and against llama.cpp (llama_cpp_venv of
#    scripts/lib.sh, built for this CPU once).
# Exits non-zero when the accuracies differ or llama.cpp's total
# log-likelihood is more than 0.5% away (the perplexity parity rule).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
PORT="${2:-8093}"
CACHE="${GEMMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-rs}"
VENV="${LMEVAL_VENV:-$CACHE/venv-lmeval}"
LLAMA_PY="$(llama_cpp_venv)/bin/python"
if ! "$VENV/bin/python" -c "import lm_eval" 2>/dev/null; then
  echo "installing lm-eval into $VENV (once)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "lm-eval[api]==0.4.13"
fi
cargo build --release -q -p gemma-cli
OUT="$(mktemp -d)"
target/release/gemma serve -m "$MODEL" --port "$PORT" --max-concurrent 8 --max-queue 256 2> "$OUT/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_for_health "http://127.0.0.1:$PORT" || { echo "FAILED: gemma serve never became healthy:" >&2; tail -30 "$OUT/serve.log" >&2; exit 1; }
t0=$(date +%s.%N)
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "$VENV/bin/lm_eval" --model local-completions \
  --model_args "base_url=http://127.0.0.1:$PORT/v1/completions,model=gemma,tokenizer_backend=remote,num_concurrent=1,max_retries=1,max_length=2048" --batch_size 8 \
  --tasks gemma_rs_mc,gemma_rs_gen --include_path tools/lm_eval --output_path "$OUT/lm" --log_samples > "$OUT/lm_eval.log" 2>&1 \
  || { tail -40 "$OUT/lm_eval.log"; exit 1; }
t1=$(date +%s.%N)
kill $SERVER; wait $SERVER 2>/dev/null || true
sleep 2
for t in mc gen; do
  s0=$(date +%s.%N)
  target/release/gemma eval -m "$MODEL" --task "testdata/eval/$t.jsonl" --json --samples "$OUT/$t.samples.jsonl" > "$OUT/$t.json" 2>/dev/null
  s1=$(date +%s.%N)
  echo "$s0 $s1" > "$OUT/$t.time"
done
"$LLAMA_PY" tools/lm_eval/compare.py "$OUT" "$MODEL" "$t0" "$t1"
