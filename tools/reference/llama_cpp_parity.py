#!/usr/bin/env python3
"""Record llama.cpp's answers on the real Gemma 3 270M Q4_K_M GGUF, through
llama-cpp-python (PyPI), for the parity tests under crates/gemma/tests.

    python tools/reference/llama_cpp_parity.py MODEL.gguf testdata/llama_cpp

Writes:
  tokenizer.json   ids llama.cpp gives for tricky strings (add_bos=True, special=True)
  greedy.json      64 greedy tokens per prompt, with llama.cpp's top-2 logit
                   margin at every step (a margin < 0.05 is a near-tie that
                   either engine may break either way), and batch_ids: the
                   argmax llama.cpp itself gives at the same steps when the
                   prompt and continuation are evaluated in one batch instead
                   of one token at a time (its own summation-order noise; the
                   largest margin at which the two disagree is the scale below
                   which an argmax is not reproducible, even by llama.cpp)
  perplexity.json  perplexity of ppl_long.txt (~8k tokens: with 8-bit
                   activations a 1-ulp change anywhere moves the perplexity of
                   a 500-token window by ~0.5%, so a 0.5% comparison needs
                   thousands of tokens to measure more than that noise), the way `gemma perplexity --file F
                   --ctx 512` defines it: the text is tokenized without BOS, cut
                   into windows of ctx-1 tokens, each preceded by BOS and
                   evaluated from an empty cache; every position after the
                   first is scored; mean NLL (natural log) over all of them
  logits.safetensors  the full logits of the last position of a fixed prompt,
                   and the top-10 ids at every position
"""
import json
import math
import os
import sys

import numpy as np
from llama_cpp import Llama
from safetensors.numpy import save_file

MODEL, OUT = sys.argv[1], sys.argv[2]
CTX = 512
llm = Llama(MODEL, n_ctx=CTX, n_batch=CTX, n_threads=os.cpu_count(), logits_all=True, verbose=False, seed=0)
vocab = llm.n_vocab()

TRICKY = [
    "Hello world", " leading space", "trailing space ", "  two leading", "multiple   inner    spaces",
    "line one\nline two", "para\n\npara", "three\n\n\nnewlines", "\ttab\tseparated\t", "mixed \t \n whitespace",
    "emoji 😀🎉👍🏽", "CJK 你好，世界", "Japanese 日本語のテキストです。", "accents: café naïve résumé Ångström",
    "digits 1234567890 3.14159 1,000,000", "code: def f(x):\n    return x**2  # square",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n", "not a tag <start_of_turnx> here",
    "html <table><tr><td>1</td></tr></table>", "URL https://example.com/a?b=c&d=e", "", " ", "a", "Ünïcödé ßtraße",
    "русский текст", "العربية", "🤖 robots & humans — «quotes» ‘single’", "x" * 40, "The quick brown fox jumps over the lazy dog.",
]


def tokenize(text, bos=True):
    return llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True)


def detok(ids):
    return llm.detokenize(ids).decode("utf-8", errors="replace")


tok = [{"text": t, "ids": tokenize(t)} for t in TRICKY]
with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
    json.dump(tok, f, ensure_ascii=False, indent=1)


def logits_of(ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


PROMPTS = [
    "The capital of France is",
    "English: cat\nFrench: chat\nEnglish: dog\nFrench: chien\nEnglish: house\nFrench:",
    "Q: What is the boiling point of water at sea level?\nA:",
    "def fibonacci(n):\n",
    "<start_of_turn>user\nWrite a short poem about the sea.<end_of_turn>\n<start_of_turn>model\n",
]
greedy = []
for p in PROMPTS:
    ids = tokenize(p)
    llm.reset()
    llm.eval(ids)
    out, margins = [], []
    for _ in range(64):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.sort(row)[-2:]
        nxt = int(np.argmax(row))
        out.append(nxt)
        margins.append(float(top2[1] - top2[0]))
        llm.eval([nxt])
    near = [i for i, m in enumerate(margins) if m < 0.05]
    batch = logits_of(ids + out[:-1])[len(ids) - 1 :]
    batch_ids = [int(i) for i in np.argmax(batch, axis=1)]
    flips = [(i, round(margins[i], 3)) for i in range(len(out)) if batch_ids[i] != out[i]]
    print(f"{p[:30]!r}: near-ties at steps {near}; batch-vs-incremental argmax flips (step, margin) {flips}")
    greedy.append({"prompt": p, "prompt_ids": ids, "ids": out, "margins": margins, "batch_ids": batch_ids,
                   "text": detok(out)})
with open(os.path.join(OUT, "greedy.json"), "w") as f:
    json.dump(greedy, f, ensure_ascii=False, indent=1)

PPL_FILE = "ppl_long.txt"
text = open(os.path.join(OUT, PPL_FILE), encoding="utf-8").read()
ids = tokenize(text, bos=False)
bos = llm.token_bos()
nll, count = 0.0, 0
for s in range(0, len(ids), CTX - 1):
    w = [bos] + ids[s : s + CTX - 1]
    lg = logits_of(w).astype(np.float64)
    lse = np.log(np.exp(lg - lg.max(axis=1, keepdims=True)).sum(axis=1)) + lg.max(axis=1)
    for t in range(1, len(w)):
        nll += lse[t - 1] - lg[t - 1, w[t]]
        count += 1
ppl = {"file": PPL_FILE, "ctx": CTX, "text_tokens": len(ids), "tokens": count, "nll": nll / count, "ppl": math.exp(nll / count)}
print("perplexity", ppl)
with open(os.path.join(OUT, "perplexity.json"), "w") as f:
    json.dump(ppl, f, indent=1)

prompt = "The quick brown fox jumps over the lazy dog. In the beginning"
pids = tokenize(prompt)
lg = logits_of(pids)
save_file({"prompt_ids": np.array(pids, dtype=np.int64), "last_logits": lg[-1].copy(),
           "top10": np.argsort(-lg, axis=1)[:, :10].astype(np.int64)}, os.path.join(OUT, "logits.safetensors"))
print("wrote", OUT)
