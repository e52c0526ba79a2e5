#!/usr/bin/env bash
# Fine-tuning speed and memory of `gemma finetune` against PyTorch + PEFT on
# this machine, same model (the Q4_K_M GGUF; PyTorch gets it dequantized to
# f32), same tokens, batch, rank and targets, measured in one run,
# alternating (the machine drifts). A benchmark: prints numbers, asserts
# nothing.
#
#   scripts/bench-finetune.sh [STEPS] [ROUNDS]      (default 6 steps, 2 rounds)
#
# Needs a venv with torch, transformers, peft, gguf: TORCH_VENV (default
# ~/.cache/gemma-rs/venv-torch; created on first use, ~5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-6}"; ROUNDS="${2:-2}"; BATCH=8; RANK=16; ALPHA=32
THREADS="${THREADS:-$(nproc)}"
MODEL="${MODEL:-$(scripts/fetch-model.sh)}"
VENV="${TORCH_VENV:-$HOME/.cache/gemma-rs/venv-torch}"
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q torch transformers peft gguf safetensors; }
cargo build --release -q -p gemma-cli
GEMMA=target/release/gemma
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
# The demo's data (dates in words, chat format, assistant-only loss).
python3 - "$WORK" <<'PY'
import json, random, sys
months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
rng = random.Random(7)
with open(f"{sys.argv[1]}/train.jsonl", "w") as f:
    for _ in range(400):
        y, m, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Write the date {y:04d}-{m:02d}-{d:02d} in words."},
                                         {"role": "assistant", "content": f"{months[m - 1]} {d}, {y}"}]}) + "\n")
PY
"$GEMMA" finetune -m "$MODEL" --data "$WORK/train.jsonl" --out "$WORK/tok" --loss assistant-only --dry-run 2>/dev/null
ours() {  # $1: extra flags; prints "tokens/s peakMB"
  rm -rf "$WORK/out"
  # shellcheck disable=SC2086
  /usr/bin/time -f "%M" -o "$WORK/rss" "$GEMMA" --threads "$THREADS" finetune -m "$MODEL" $1 --data "$WORK/train.jsonl" --out "$WORK/out" \
    --loss assistant-only --max-steps "$STEPS" --batch-size $BATCH --rank $RANK --alpha $ALPHA --log-every 0 2>/dev/null
  python3 - "$WORK/out/trainer_log.jsonl" "$WORK/rss" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][1:]
tps = sum(r["tokens"] for r in rows) / sum(r["tokens"] / r["tokens_per_second"] for r in rows)
print(f"{tps:.1f} {int(open(sys.argv[2]).read().split()[-1]) / 1024:.0f}")
PY
}
torch_run() {
  "$VENV/bin/python" tools/reference/bench_finetune_torch.py "$MODEL" "$WORK/tok/tokenized.jsonl" "$STEPS" $BATCH $RANK $ALPHA "$THREADS" 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f %.0f" % (d["tokens_per_second"], d["peak_rss_mb"]))'
}
echo "LoRA rank $RANK on all seven projections, batch $BATCH, $STEPS steps (first excluded), $THREADS threads, $(nproc) cores"
printf "%-34s %12s %12s\n" "run" "tokens/s" "peak RSS MB"
for r in $(seq "$ROUNDS"); do
  read -r qt qm < <(ours "")
  read -r bt bm < <(ours "--dtype bf16")
  read -r pt pm < <(torch_run)
  printf "%-34s %12s %12s\n" "gemma finetune (Q4_K_M base, QLoRA)" "$qt" "$qm" "gemma finetune (--dtype bf16)" "$bt" "$bm" "PyTorch + PEFT (f32)" "$pt" "$pm"
  python3 -c "print(f'round $r: QLoRA {$qt/$pt:.2f}x PyTorch speed at {$qm/$pm:.2f}x its memory; bf16 {$bt/$pt:.2f}x at {$bm/$pm:.2f}x')"
done
