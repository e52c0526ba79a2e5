#!/usr/bin/env python3
"""Check that llama.cpp (llama-cpp-python) loads and runs GGUF files written
by `gemma quantize`, and print its greedy continuation and perplexity-style
score next to the file name.

    python tools/reference/check_gguf_with_llama_cpp.py FILE.gguf [FILE.gguf ...]
"""
import math
import sys

import numpy as np
from llama_cpp import Llama

TEXT = open("testdata/llama_cpp/ppl.txt", encoding="utf-8").read()
for path in sys.argv[1:]:
    llm = Llama(path, n_ctx=512, n_batch=512, logits_all=True, verbose=False)
    ids = llm.tokenize(b"The capital of France is", add_bos=True, special=True)
    out = []
    llm.reset()
    llm.eval(ids)
    for _ in range(12):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    toks = llm.tokenize(TEXT.encode(), add_bos=False, special=True)[:511]
    w = [llm.token_bos()] + toks
    llm.reset()
    llm.eval(w)
    lg = np.array(llm.scores[: len(w)], dtype=np.float64)
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    nll = float(np.mean([lse[t - 1] - lg[t - 1, w[t]] for t in range(1, len(w))]))
    print(f"{path}: llama.cpp OK; greedy: {llm.detokenize(out).decode(errors='replace')!r}; ppl(first window) {math.exp(nll):.3f}")
