#!/usr/bin/env bash
# The fine-tuning demo: turn the Gemma 3 270M *base* model (Q4_K_M GGUF,
# kept quantized: QLoRA) into a chat model for a task it cannot do
# zero-shot — writing ISO dates in words ("2024-03-15" → "March 15, 2024") —
# on this machine's CPU, with its own generated data (no download but the
# model). Prints held-out exact match before and after, the time, and a
# chat reply that ends at <end_of_turn>.
#
#   scripts/finetune-demo.sh [OUT_DIR]      (default: target/finetune-demo)
#
# Extra flags for `gemma finetune` can be passed in FINETUNE_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/finetune-demo}"
MODEL="${MODEL:-$(scripts/fetch-model.sh)}"
GEMMA="${GEMMA:-target/release/gemma}"
[ -x "$GEMMA" ] || cargo build --release -q -p gemma-cli
mkdir -p "$OUT"

# Data: 400 training conversations, 50 held-out prompts (other dates).
python3 - "$OUT" <<'PY'
import json, random, sys
out = sys.argv[1]
months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
rng = random.Random(2026)
seen = set()
def item():
    while True:
        y, m, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
        if (y, m, d) not in seen:
            seen.add((y, m, d))
            return f"{y:04d}-{m:02d}-{d:02d}", f"{months[m - 1]} {d}, {y}"
ask = lambda q: f"Write the date {q} in words."
with open(f"{out}/train.jsonl", "w") as f:
    for _ in range(400):
        q, a = item()
        f.write(json.dumps({"messages": [{"role": "user", "content": ask(q)}, {"role": "assistant", "content": a}]}) + "\n")
with open(f"{out}/heldout.jsonl", "w") as f:
    for _ in range(50):
        q, a = item()
        prompt = f"<start_of_turn>user\n{ask(q)}<end_of_turn>\n<start_of_turn>model\n"
        f.write(json.dumps({"prompt": prompt, "target": a, "until": ["<end_of_turn>", "\n"]}) + "\n")
PY

em() { "$GEMMA" eval -m "$MODEL" --task "$OUT/heldout.jsonl" --json "$@" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["exact_match"])'; }
BEFORE=$(em)
echo "held-out exact match before: $BEFORE"
START=$(date +%s)
rm -rf "$OUT/adapter"
# shellcheck disable=SC2086
"$GEMMA" finetune -m "$MODEL" --data "$OUT/train.jsonl" --out "$OUT/adapter" \
  --loss assistant-only --epochs 1 --batch-size 8 --lr 1e-3 --warmup-steps 5 --log-every 10 ${FINETUNE_FLAGS:-}
SECS=$(( $(date +%s) - START ))
AFTER=$(em --lora "$OUT/adapter")
echo "held-out exact match after:  $AFTER"
echo "training time: ${SECS}s"
echo "sample (gemma generate --chat --lora):"
"$GEMMA" generate -m "$MODEL" --lora "$OUT/adapter" --chat -p "Write the date 1969-07-20 in words." -n 32 2>"$OUT/sample.err"
echo
grep -o 'finish: [A-Za-z]*' "$OUT/sample.err" || true
python3 - "$BEFORE" "$AFTER" "$SECS" "$OUT" <<'PY'
import json, sys
before, after, secs, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
json.dump({"exact_match_before": before, "exact_match_after": after, "train_seconds": secs}, open(f"{out}/demo.json", "w"))
print(json.dumps({"exact_match_before": before, "exact_match_after": after, "train_seconds": secs}))
PY
