#!/usr/bin/env python3
"""gemma_rs from Python against the CLI on the same model: tokens/s of one
greedy generation (the binding's overhead) and of 8 Python threads on one
`Gemma` (batched by the engine), in alternating rounds.

    python tools/bench_python.py GEMMA_BIN MODEL [TOKENS=128] [ROUNDS=2]

Needs the gemma_rs wheel installed (scripts/check-python.sh builds it).
"""
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from gemma_rs import Gemma

gemma, model = sys.argv[1], sys.argv[2]
tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 128
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
PROMPT = "The history of the printing press begins in"
g = Gemma(model)


def cli():
    r = subprocess.run([gemma, "generate", "-m", model, "-p", PROMPT, "-n", str(tokens), "-t", "0"],
                       capture_output=True, text=True, check=True)
    m = re.search(r"(\d+) generated in ([\d.]+)s", r.stderr)
    # Every run goes to the length (the base model does not stop on this
    # prompt), so Python's runs count `tokens` too.
    assert int(m.group(1)) == tokens, r.stderr
    return int(m.group(1)) / float(m.group(2))


def one(p=PROMPT):
    t0 = time.perf_counter()
    g.generate(p, max_tokens=tokens, temperature=0, repeat_penalty=1.0)
    return tokens, time.perf_counter() - t0


def python_single():
    n, dt = one()
    return n / dt


def python_threads(k=8):
    prompts = [f"{PROMPT} {i}" for i in range(k)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(k) as pool:
        res = list(pool.map(one, prompts))
    return sum(r[0] for r in res) / (time.perf_counter() - t0)


rows = {"CLI, 1 stream": [], "Python, 1 stream": [], "Python, 8 threads (aggregate)": []}
for _ in range(rounds):
    rows["CLI, 1 stream"].append(cli())
    rows["Python, 1 stream"].append(python_single())
    rows["Python, 8 threads (aggregate)"].append(python_threads())
print(f"| what | tok/s ({rounds} rounds, {tokens} tokens; the CLI's figure excludes the prompt, Python's includes it) | best |")
print("| --- | --- | ---: |")
for k, v in rows.items():
    print(f"| {k} | {' / '.join(f'{x:.1f}' for x in v)} | {max(v):.1f} |")
print(f"Python / CLI, 1 stream: {max(rows['Python, 1 stream']) / max(rows['CLI, 1 stream']):.2f}x")
