#!/usr/bin/env bash
# gemma-rs vs llama.cpp on the same GGUF, same threads, same prompt and
# generation lengths, runs alternating between the engines; prints each
# figure side by side with the ratio gemma-rs / llama.cpp, the decode
# roofline share of both, and peak RSS.
#   scripts/bench-vs-llama-cpp.sh [MODELS] [THREADS=2] [N_PROMPT=512] [N_GEN=128] [ROUNDS=3] [DEPTHS=0]
# MODELS, comma-separated (default the real 270M), one table each, all in
# the same run; each is
#   FILE.gguf                     a model file, or
#   VARIANT:TYPE[:NP/NG[/ROUNDS[/REPS]]] a random-weight model of a published
#                                 shape (gemma synth: gemma3-4b:q4_k_m, gemma4-31b:q4_k_m:64/16/1/1),
#                                 written to <cache>/bench/, measured, deleted
#   shapes                        every shape users run, with test sizes that
#                                 finish on 2 cores (below)
# DEPTHS (comma-separated, llama-bench's -d): every test also runs after
# that many tokens already in the cache.
# llama.cpp comes from llama_cpp_venv (scripts/lib.sh): llama-cpp-python
# built for this CPU's instruction sets (AMX only where it passes a smoke
# run), about 6-12 minutes on 2 cores, once. Both engines' instruction sets
# are printed above the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# The shapes of issue 28, sized to finish in about 40 minutes on 2 cores: up
# to 4B pp512/tg128, E4B, 12B and the 26B-A4B MoE pp256/tg32, 27B and 31B
# pp64/tg16; one round each, 2 repetitions after a warm-up up to 4B, 1 above.
SHAPES="gemma3-1b:q4_k_m:512/128/1,gemma3-1b:q8_0:512/128/1,gemma3-1b:bf16:512/128/1,gemma3-4b:q4_k_m:512/128/1,gemma3-4b:q8_0:512/128/1,gemma4-e4b:q4_k_m:256/32/1/1,gemma3-12b:q4_k_m:256/32/1/1,gemma4-26b-a4b:q4_k_m:256/32/1/1,gemma3-27b:q4_k_m:64/16/1/1,gemma4-31b:q4_k_m:64/16/1/1"
MODELS="${1:-$(scripts/fetch-model.sh)}"
[ "$MODELS" = shapes ] && MODELS="$SHAPES"
THREADS="${2:-2}"; NP="${3:-512}"; NG="${4:-128}"; ROUNDS="${5:-3}"; DEPTHS="${6:-0}"
VENV=$(llama_cpp_venv)
cargo build --release -q -p gemma-cli
echo "CPU: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "gemma-rs $(target/release/gemma --version | tail -1)"
echo "llama.cpp: $(llama_cpp_build_info "$VENV")"
BENCH_DIR="$(gemma_cache)/bench"
mkdir -p "$BENCH_DIR"
BW=""
echo
for SPEC in ${MODELS//,/ }; do
NP_M="$NP"; NG_M="$NG"; ROUNDS_M="$ROUNDS"; REPS_M=2; SYNTH=""
if [[ "$SPEC" == *.gguf || -f "$SPEC" ]]; then
  MODEL="$SPEC"
  [ -f "$MODEL" ] || { echo "bench-vs-llama-cpp: no such model file: $MODEL" >&2; exit 1; }
else
  IFS=: read -r VARIANT TYPE SIZES <<< "$SPEC"
  if [ -n "${SIZES:-}" ]; then IFS=/ read -r NP_M NG_M R P <<< "$SIZES"; ROUNDS_M="${R:-$ROUNDS}"; REPS_M="${P:-2}"; fi
  MODEL="$BENCH_DIR/$VARIANT-$TYPE.gguf"
  SYNTH="$MODEL"
  if [ ! -f "$MODEL" ]; then
    target/release/gemma synth --variant "$VARIANT" --type "${TYPE:-q4_k_m}" -o "$MODEL" 2>&1 | grep -v '^(random' >&2
    # Written back to disk before timing (the kernel flushing 17 GB would
    # compete with the first engine's run).
    sync
  fi
  echo "(random weights of the published $VARIANT shape, $TYPE: speed only)"
fi
if [ -z "$BW" ]; then
  BW=$(target/release/gemma bench -m "$MODEL" --threads "$THREADS" -p 0 -n 0 --roofline 2>/dev/null | sed -n 's/.*read bandwidth \([0-9.]*\) GB\/s.*/\1/p')
  echo "read bandwidth ($THREADS threads): ${BW:-unknown} GB/s (gemma bench --roofline)"
fi
OUT="$(mktemp -d)"
# Alternate which engine goes first, and let the machine settle between
# runs (freeing a process's memory keeps the kernel busy for a moment).
for r in $(seq "$ROUNDS_M"); do
  run_gemma() { sleep 3; target/release/gemma bench -m "$MODEL" --threads "$THREADS" -p "$NP_M" -n "$NG_M" -d "$DEPTHS" -r "$REPS_M" --json 2>/dev/null > "$OUT/gemma.$r.json"; }
  run_llama() { sleep 3; "$VENV/bin/python" scripts/bench_llama_cpp.py "$MODEL" "$THREADS" "$NP_M" "$NG_M" "$REPS_M" "$DEPTHS" > "$OUT/llama.$r.json"; }
  if [ $((r % 2)) = 1 ]; then run_gemma; run_llama; else run_llama; run_gemma; fi
done
python3 - "$OUT" "$ROUNDS_M" "$MODEL" "$THREADS" "${BW:-0}" <<'PY'
import json, statistics, sys, os, subprocess
out, rounds, model, threads, bw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5] or 0)
def samples(engine):
    acc, extra = {}, {"rss": [], "load": []}
    for r in range(1, rounds + 1):
        for row in json.load(open(os.path.join(out, f"{engine}.{r}.json"))):
            key = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
            if row.get("n_depth"):
                key += f" @ d{row['n_depth']}"
            acc.setdefault(key, []).extend(row["samples_ts"])
            if row.get("peak_rss_bytes"):
                extra["rss"].append(row["peak_rss_bytes"] / 2**20)
            if row.get("load_time_s") is not None:
                extra["load"].append(row["load_time_s"])
            if row.get("weight_bytes_per_token"):
                extra["per_token"] = row["weight_bytes_per_token"]
    return acc, extra
(g, ge), (l, le) = samples("gemma"), samples("llama")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"model {os.path.basename(model)}, {threads} threads, {rounds} alternating rounds, commit {commit}\n")
print("| test | gemma-rs | llama.cpp | ratio |")
print("| --- | ---: | ---: | ---: |")
for k in g:
    gm, lm = statistics.median(g[k]), statistics.median(l[k])
    print(f"| {k} (t/s) | {gm:.2f} ± {statistics.pstdev(g[k]):.2f} | {lm:.2f} ± {statistics.pstdev(l[k]):.2f} | {gm / lm:.2f} |")
    if k.startswith("tg") and bw and ge.get("per_token"):
        ceiling = bw * 1e9 / ge["per_token"]
        print(f"| {k} share of the decode ceiling ({ge['per_token'] / 1e6:.0f} MB read per token, {ceiling:.1f} t/s) | {100 * gm / ceiling:.0f}% | {100 * lm / ceiling:.0f}% | |")
if ge["rss"] and le["rss"]:
    gr, lr = max(ge["rss"]), max(le["rss"])
    print(f"| peak RSS (MiB, lower is better) | {gr:.0f} | {lr:.0f} | {gr / lr:.2f} |")
if ge["load"] and le["load"]:
    gl, ll = statistics.median(ge["load"]), statistics.median(le["load"])
    print(f"| load time (s) | {gl:.2f} | {ll:.2f} | {gl / ll:.2f} |")
PY
rm -rf "$OUT"
[ -n "$SYNTH" ] && rm -f "$SYNTH"
echo
done
