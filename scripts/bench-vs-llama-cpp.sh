#!/usr/bin/env bash
# gemma-rs vs llama.cpp on the same GGUF, same threads, same prompt and
# generation lengths, runs alternating between the engines; prints each
# figure side by side with the ratio gemma-rs / llama.cpp.
#   scripts/bench-vs-llama-cpp.sh [MODEL.gguf[,MODEL2.gguf…]] [THREADS=2] [N_PROMPT=512] [N_GEN=128] [ROUNDS=3] [DEPTHS=0]
# MODELS (comma-separated; default the real 270M): one table per model, all
# in the same run.
# DEPTHS (comma-separated, llama-bench's -d): every test also runs after
# that many tokens already in the cache.
# llama.cpp comes from llama_cpp_venv (scripts/lib.sh): llama-cpp-python
# built for this CPU's instruction sets (AMX only where it passes a smoke
# run), about 6-12 minutes on 2 cores, once. Both engines' instruction sets
# are printed above the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODELS="${1:-$(scripts/fetch-model.sh)}"
THREADS="${2:-2}"; NP="${3:-512}"; NG="${4:-128}"; ROUNDS="${5:-3}"; DEPTHS="${6:-0}"
VENV=$(llama_cpp_venv)
cargo build --release -q -p gemma-cli
echo "CPU: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "gemma-rs $(target/release/gemma --version | tail -1)"
echo "llama.cpp: $(llama_cpp_build_info "$VENV")"
echo
for MODEL in ${MODELS//,/ }; do
[ -f "$MODEL" ] || { echo "bench-vs-llama-cpp: no such model file: $MODEL" >&2; exit 1; }
OUT="$(mktemp -d)"
# Alternate which engine goes first, and let the machine settle between
# runs (freeing a process's memory keeps the kernel busy for a moment).
for r in $(seq "$ROUNDS"); do
  run_gemma() { sleep 3; target/release/gemma bench -m "$MODEL" --threads "$THREADS" -p "$NP" -n "$NG" -d "$DEPTHS" -r 2 --json 2>/dev/null > "$OUT/gemma.$r.json"; }
  run_llama() { sleep 3; "$VENV/bin/python" scripts/bench_llama_cpp.py "$MODEL" "$THREADS" "$NP" "$NG" 2 "$DEPTHS" > "$OUT/llama.$r.json"; }
  if [ $((r % 2)) = 1 ]; then run_gemma; run_llama; else run_llama; run_gemma; fi
done
python3 - "$OUT" "$ROUNDS" "$MODEL" "$THREADS" <<'PY'
import json, statistics, sys, os, subprocess
out, rounds, model, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
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
    return acc, extra
(g, ge), (l, le) = samples("gemma"), samples("llama")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"model {os.path.basename(model)}, {threads} threads, {rounds} alternating rounds, commit {commit}\n")
print("| test | gemma-rs | llama.cpp | ratio |")
print("| --- | ---: | ---: | ---: |")
for k in g:
    gm, lm = statistics.median(g[k]), statistics.median(l[k])
    print(f"| {k} (t/s) | {gm:.1f} ± {statistics.pstdev(g[k]):.1f} | {lm:.1f} ± {statistics.pstdev(l[k]):.1f} | {gm / lm:.2f} |")
if ge["rss"] and le["rss"]:
    gr, lr = max(ge["rss"]), max(le["rss"])
    print(f"| peak RSS (MiB, lower is better) | {gr:.0f} | {lr:.0f} | {gr / lr:.2f} |")
if ge["load"] and le["load"]:
    gl, ll = statistics.median(ge["load"]), statistics.median(le["load"])
    print(f"| load time (s) | {gl:.2f} | {ll:.2f} | {gl / ll:.2f} |")
PY
rm -rf "$OUT"
echo
done
