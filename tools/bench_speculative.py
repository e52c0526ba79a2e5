#!/usr/bin/env python3
"""Speculative decoding, ours against llama.cpp's, on the same GGUF: a
prompt whose answer repeats text from it (a code file rewritten with type
hints), greedy, plain and with prompt lookup, in alternating rounds.

    python tools/bench_speculative.py GEMMA_BIN MODEL.gguf [TOKENS=200] [ROUNDS=2] [THREADS=2]

Run by scripts/bench-speculative.sh with llama-cpp-python's venv (its
LlamaPromptLookupDecoding is the prompt-lookup drafter llama-cpp-python
users have). Each timing covers prompt and generation, not loading. Our
outputs with and without speculation must be identical (exit 1 if not).
"""
import re
import subprocess
import sys
import time

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


def ours(mode):
    with open("/tmp/bench_speculative_prompt.txt", "w") as f:
        f.write(PROMPT)
    r = subprocess.run([gemma, "generate", "-m", model, "--prompt-file", "/tmp/bench_speculative_prompt.txt", "-n", str(tokens), "-t", "0",
                        "--threads", str(threads), "--speculative", mode], capture_output=True, text=True, check=True)
    m = re.search(r"(\d+) generated in ([\d.]+)s", r.stderr)
    spec = re.search(r"\[speculative: (\d+) drafted, (\d+) accepted", r.stderr)
    return r.stdout, int(m.group(1)), float(m.group(2)), (spec.groups() if spec else None)


plain_llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
lookup_llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False,
                   draft_model=LlamaPromptLookupDecoding(num_pred_tokens=8))


def theirs(llm):
    llm.reset()
    t0 = time.perf_counter()
    out = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, top_k=1, repeat_penalty=1.0)
    dt = time.perf_counter() - t0
    return out["choices"][0]["text"], out["usage"]["completion_tokens"], dt


rows = {k: [] for k in ("ours plain", "ours ngram", "llama.cpp plain", "llama.cpp lookup")}
texts = {}
for _ in range(rounds):
    for name, fn in (("ours plain", lambda: ours("off")), ("llama.cpp plain", lambda: theirs(plain_llm)),
                     ("ours ngram", lambda: ours("ngram")), ("llama.cpp lookup", lambda: theirs(lookup_llm))):
        res = fn()
        texts[name] = res[0]
        rows[name].append(res[1] / res[2])
        if name == "ours ngram" and res[3]:
            drafted, accepted = map(int, res[3])
            rows.setdefault("acceptance", []).append(accepted / max(drafted, 1))

best = {k: max(v) for k, v in rows.items()}
print(f"| engine, mode | tok/s ({rounds} rounds, prompt + {tokens} tokens, {threads} threads) | best |")
print("| --- | --- | ---: |")
for k in ("ours plain", "ours ngram", "llama.cpp plain", "llama.cpp lookup"):
    print(f"| {k} | {' / '.join(f'{x:.1f}' for x in rows[k])} | {best[k]:.1f} |")
print(f"\nspeedup from speculation: ours {best['ours ngram'] / best['ours plain']:.2f}x, "
      f"llama.cpp {best['llama.cpp lookup'] / best['llama.cpp plain']:.2f}x; "
      f"ours ngram / llama.cpp lookup: {best['ours ngram'] / best['llama.cpp lookup']:.2f}x")
if "acceptance" in rows:
    print(f"our draft acceptance: {rows['acceptance'][-1]:.0%}")
same = texts["ours plain"] == texts["ours ngram"]
print(f"our output identical with and without speculation: {same}; "
      f"llama.cpp's identical: {texts['llama.cpp plain'] == texts['llama.cpp lookup']}; "
      f"ours == llama.cpp's (plain): {texts['ours plain'] == texts['llama.cpp plain']}")
sys.exit(0 if same else 1)
