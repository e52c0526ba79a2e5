#!/usr/bin/env python3
"""Speculative decoding, ours against llama.cpp's, on the same GGUF, in
alternating rounds:

- code: a prompt whose answer repeats text from it (a code file rewritten
  with type hints), greedy, plain and with prompt lookup;
- free: free-form continuation of an essay opening (little to look up),
  greedy with repetition penalty 1.1 (the base 270M loops without one):
  prompt lookup must back off, never slower than plain;
- draft: a draft model on ordinary text: the model converted to bf16 (the
  reference precision) as the target and the GGUF itself (Q4_K_M) drafting
  for it, free-form continuations of four openings with repetition penalty
  1.1, greedy; plain, drafted (the default draft vocabulary) and drafted
  with the draft's whole head (`--draft-vocab 0`);
- server: the code task as 4 concurrent streams to one `gemma serve
  --speculative ngram`, each request plain (`"speculative": false`) or
  drafted; aggregate tok/s over the 4 (continuous batching; verify rows
  share the batched step with the other streams' rows).

    python tools/bench_speculative.py GEMMA_BIN MODEL.gguf [TOKENS=200] [ROUNDS=2] [THREADS=2]

Run by scripts/bench-speculative.sh with llama-cpp-python's venv (its
LlamaPromptLookupDecoding is the prompt-lookup drafter llama-cpp-python
users have). Each timing covers prompt and generation, not loading. Our
outputs with and without speculation must be identical (exit 1 if not).
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

gemma, model = sys.argv[1], sys.argv[2]
tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 200
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2

PROMPT = '''import math


def area(r):
    """Area of a circle of radius r."""
    return math.pi * r * r


def perimeter(r):
    """Perimeter of a circle of radius r."""
    return 2 * math.pi * r


def volume(r):
    """Volume of a sphere of radius r."""
    return 4 / 3 * math.pi * r ** 3


def surface(r):
    """Surface of a sphere of radius r."""
    return 4 * math.pi * r * r


def scale(shape, factor):
    """Scale every length of a shape (a dict of lengths) by factor."""
    return {name: value * factor for name, value in shape.items()}


# The same module with type hints:

import math


def area(r: float) -> float:
'''

from llama_cpp import Llama  # noqa: E402
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding  # noqa: E402


FREE = "The history of the printing press begins in"
TASKS = {"code": (PROMPT, 1.0), "free": (FREE, 1.1)}


OPENINGS = ["The history of the printing press begins in",
            "The history of the Roman Empire spans many centuries. In the beginning,",
            "Photosynthesis is the process by which plants",
            "My favourite recipe for a quick weeknight dinner is"]


def ours(mode, task, target=None, extra=()):
    prompt, penalty = TASKS[task] if task in TASKS else (task, 1.1)
    with open("/tmp/bench_speculative_prompt.txt", "w") as f:
        f.write(prompt)
    r = subprocess.run([gemma, "generate", "-m", target or model, "--prompt-file", "/tmp/bench_speculative_prompt.txt", "-n", str(tokens), "-t", "0",
                        "--threads", str(threads), "--speculative", mode, "--repeat-penalty", str(penalty), *extra],
                       capture_output=True, text=True, check=True)
    m = re.search(r"(\d+) generated in ([\d.]+)s", r.stderr)
    spec = re.search(r"\[speculative: (\d+) drafted, (\d+) accepted", r.stderr)
    return r.stdout, int(m.group(1)), float(m.group(2)), (spec.groups() if spec else None)


plain_llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
lookup_llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False,
                   draft_model=LlamaPromptLookupDecoding(num_pred_tokens=8))


def theirs(llm, task):
    prompt, penalty = TASKS[task]
    llm.reset()
    t0 = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, top_k=1, repeat_penalty=penalty)
    dt = time.perf_counter() - t0
    return out["choices"][0]["text"], out["usage"]["completion_tokens"], dt


def server_round(port, speculative, streams=4):
    """`streams` concurrent code-task requests; (texts, tokens, seconds)."""
    body = json.dumps({"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "speculative": speculative}).encode()

    def one(_):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            out = json.load(r)
        return out["choices"][0]["text"], out["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        res = list(pool.map(one, range(streams)))
    return [r[0] for r in res], sum(r[1] for r in res), time.perf_counter() - t0


def start_server():
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen([gemma, "serve", "-m", model, "--threads", str(threads), "--speculative", "ngram",
                             "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("gemma serve did not come up")


NAMES = [f"{t} {k}" for t in TASKS for k in ("ours plain", "ours ngram", "llama.cpp plain", "llama.cpp lookup")]
rows = {k: [] for k in NAMES + ["server plain", "server ngram"]}
accept = {}
texts = {}
for _ in range(rounds):
    for task in TASKS:
        for name, fn in (("ours plain", lambda: ours("off", task)), ("llama.cpp plain", lambda: theirs(plain_llm, task)),
                         ("ours ngram", lambda: ours("ngram", task)), ("llama.cpp lookup", lambda: theirs(lookup_llm, task))):
            res = fn()
            texts[f"{task} {name}"] = res[0]
            rows[f"{task} {name}"].append(res[1] / res[2])
            if name == "ours ngram" and res[3]:
                drafted, accepted = map(int, res[3])
                accept[task] = accepted / max(drafted, 1)
# A draft model: the Q4_K_M file drafting for its bf16 conversion.
bf16 = f"/tmp/bench_speculative_bf16_{os.getpid()}.gguf"
subprocess.run([gemma, "quantize", "-m", model, "--type", "bf16", "--out", bf16], capture_output=True, check=True)
DRAFT_MODES = {"plain": ("off", ()), "draft": ("draft", ("--draft", model)), "draft, whole head": ("draft", ("--draft", model, "--draft-vocab", "0"))}
drafts = {m: [] for m in DRAFT_MODES}
draft_accept = {m: [0, 0] for m in DRAFT_MODES}
try:
    for _ in range(rounds):
        for m, (mode, extra) in DRAFT_MODES.items():
            n_all, s_all = 0, 0.0
            for i, opening in enumerate(OPENINGS):
                out, n, dt, spec = ours(mode, opening, bf16, extra)
                texts[f"draft {i} {m}"] = out
                n_all, s_all = n_all + n, s_all + dt
                if spec:
                    draft_accept[m][0] += int(spec[0])
                    draft_accept[m][1] += int(spec[1])
            drafts[m].append(n_all / s_all)
finally:
    os.remove(bf16)
# The server, one instance, alternating plain and drafted rounds.
server, port = start_server()
try:
    for _ in range(rounds):
        for name, spec in (("server plain", False), ("server ngram", True)):
            out, n, dt = server_round(port, spec)
            texts[name] = out
            rows[name].append(n / dt)
finally:
    server.terminate()
    server.wait()

best = {k: max(v) for k, v in rows.items()}
print(f"| task, engine, mode | tok/s ({rounds} rounds, prompt + {tokens} tokens, {threads} threads) | best |")
print("| --- | --- | ---: |")
for k in rows:
    print(f"| {k}{' (4 streams, aggregate)' if k.startswith('server') else ''} | {' / '.join(f'{x:.1f}' for x in rows[k])} | {best[k]:.1f} |")
print()
same = True
for task in TASKS:
    b = {k: best[f"{task} {k}"] for k in ("ours plain", "ours ngram", "llama.cpp plain", "llama.cpp lookup")}
    print(f"{task}: speedup from speculation: ours {b['ours ngram'] / b['ours plain']:.2f}x, "
          f"llama.cpp {b['llama.cpp lookup'] / b['llama.cpp plain']:.2f}x; ours ngram / llama.cpp lookup: "
          f"{b['ours ngram'] / b['llama.cpp lookup']:.2f}x; our draft acceptance {accept.get(task, 0):.0%}")
    ident = texts[f"{task} ours plain"] == texts[f"{task} ours ngram"]
    same &= ident
    print(f"  our output identical with and without speculation: {ident}; llama.cpp's identical: "
          f"{texts[f'{task} llama.cpp plain'] == texts[f'{task} llama.cpp lookup']}")
print()
print(f"| draft model (Q4_K_M drafting for its bf16 self), {len(OPENINGS)} openings, repetition penalty 1.1 | tok/s ({rounds} rounds) | best | vs plain | drafts accepted |")
print("| --- | --- | ---: | ---: | ---: |")
for m, v in drafts.items():
    d, a = draft_accept[m]
    print(f"| {m} | {' / '.join(f'{x:.1f}' for x in v)} | {max(v):.1f} | {max(v) / max(drafts['plain']):.2f}x | {a / d if d else 0:.0%} |")
for m in ("draft", "draft, whole head"):
    ident = all(texts[f"draft {i} {m}"] == texts[f"draft {i} plain"] for i in range(len(OPENINGS)))
    same &= ident
    print(f"  {m}: outputs identical to plain decoding: {ident}")
ident = texts["server plain"] == texts["server ngram"] and texts["server plain"][0].strip() != ""
same &= ident
print(f"server, 4 streams: speedup from speculation {best['server ngram'] / best['server plain']:.2f}x; "
      f"outputs identical with and without: {ident}")
sys.exit(0 if same else 1)
