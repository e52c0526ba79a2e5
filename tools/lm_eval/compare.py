"""Compare lm-eval's results through `gemma serve` with `gemma eval` and
with llama.cpp (when llama_cpp imports), for scripts/lm-eval-check.sh.
    compare.py OUT_DIR MODEL T0 T1   (T0/T1: lm-eval's start and end time)"""
import glob
import json
import math
import os
import sys

out, model, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
res_file = sorted(glob.glob(os.path.join(out, "lm", "**", "results_*.json"), recursive=True))[-1]
res = json.load(open(res_file))["results"]
ours = {t: json.load(open(os.path.join(out, f"{t}.json"))) for t in ("mc", "gen")}
times = {t: [float(x) for x in open(os.path.join(out, f"{t}.time")).read().split()] for t in ("mc", "gen")}
n_items = ours["mc"]["n"] + ours["gen"]["n"]
gemma_s = sum(b - a for a, b in times.values())

rows = [
    ("acc", res["gemma_rs_mc"]["acc,none"], ours["mc"]["acc"]),
    ("acc_norm", res["gemma_rs_mc"]["acc_norm,none"], ours["mc"]["acc_norm"]),
    ("exact_match", res["gemma_rs_gen"]["exact_match,none"], ours["gen"]["exact_match"]),
]
print("| metric | lm-eval via gemma serve | gemma eval |")
print("| --- | ---: | ---: |")
for name, a, b in rows:
    print(f"| {name} | {a:.4f} | {b:.4f} |")
print(f"| items/s | {n_items / (t1 - t0):.2f} | {n_items / gemma_s:.2f} |")
print(f"(wall time: lm-eval {t1 - t0:.1f} s incl. its start-up, gemma eval {gemma_s:.1f} s incl. model load; {n_items} items)")
ok = all(abs(a - b) < 1e-12 for _, a, b in rows)

# Per item: lm-eval's log-likelihoods vs gemma eval's.
samples = [json.loads(l) for l in open(os.path.join(out, "mc.samples.jsonl"))]
lm_file = sorted(glob.glob(os.path.join(out, "lm", "**", "samples_gemma_rs_mc_*.jsonl"), recursive=True))[-1]
lm = {}
for l in open(lm_file):
    d = json.loads(l)
    for i, r in enumerate(d["resps"]):
        lm[(int(d["doc_id"]) + 1, i)] = float(r[0][0])
d_lm = max(abs(lm[(s["line"], s["choice"])] - s["loglikelihood"]) for s in samples)
print(f"per-choice log-likelihood, lm-eval vs gemma eval: max |diff| {d_lm:.3g} over {len(samples)} choices")
ok = ok and d_lm < 1e-6

try:
    import llama_cpp
    import numpy as np
except ImportError:
    print("llama.cpp comparison skipped (llama-cpp-python not installed; scripts/bench-vs-llama-cpp.sh installs it)")
    sys.exit(0 if ok else 1)

llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False)
diffs, tok_diffs, ours_total, theirs_total, n_tok = [], [], 0.0, 0.0, 0
theirs_by = {}
for s in samples:
    ids, k = s["ids"], s["scored_from"]
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
    ll = 0.0
    for i in range(k, len(ids)):
        row = logits[i - 1]
        m = row.max()
        ll += row[ids[i]] - (m + math.log(np.exp(row - m).sum()))
    theirs_by[(s["line"], s["choice"])] = ll
    diffs.append(abs(ll - s["loglikelihood"]))
    tok_diffs.append(abs(ll - s["loglikelihood"]) / (len(ids) - k))
    ours_total += s["loglikelihood"]
    theirs_total += ll
    n_tok += len(ids) - k
lines = sorted({s["line"] for s in samples})
pick = lambda by, line: max((v, -c) for (l, c), v in by.items() if l == line)[1]
ours_by = {(s["line"], s["choice"]): s["loglikelihood"] for s in samples}
same_pick = sum(pick(ours_by, l) == pick(theirs_by, l) for l in lines)
rel = abs(ours_total - theirs_total) / abs(theirs_total)
print(f"per-choice log-likelihood, gemma-rs vs llama.cpp: max |diff| {max(diffs):.4f}, mean {sum(diffs) / len(diffs):.4f} "
      f"(per token: max {max(tok_diffs):.4f}, mean {sum(tok_diffs) / len(tok_diffs):.4f}) over {len(samples)} choices, {n_tok} tokens")
print(f"total log-likelihood: gemma-rs {ours_total:.4f}, llama.cpp {theirs_total:.4f} ({100 * rel:.3f}%); "
      f"same chosen answer on {same_pick}/{len(lines)} items")
ok = ok and rel < 0.005
sys.exit(0 if ok else 1)
