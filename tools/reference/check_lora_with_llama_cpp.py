#!/usr/bin/env python3
"""Does llama.cpp load our GGUF LoRA (gemma export-lora) and does its
perplexity move as ours does? Perplexity of TEXT with and without the
adapter, windows of CTX as `gemma perplexity --file` cuts them (text without
BOS, windows of CTX-1 tokens each after BOS, every position after the first
scored).

    ~/.cache/gemma-rs/venv-llama/bin/python tools/reference/check_lora_with_llama_cpp.py MODEL.gguf ADAPTER.gguf TEXT CTX OUT.json
"""
import json
import math
import os
import sys

import numpy as np
from llama_cpp import Llama

MODEL, LORA, TEXT, CTX, OUT = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


def nll(lora):
    kw = {"lora_path": lora} if lora else {}
    llm = Llama(MODEL, n_ctx=CTX, n_batch=CTX, n_threads=os.cpu_count(), logits_all=True, verbose=False, seed=0, **kw)
    ids = llm.tokenize(open(TEXT, encoding="utf-8").read().encode("utf-8"), add_bos=False, special=True)
    total, count = 0.0, 0
    for i in range(0, len(ids), CTX - 1):
        w = [llm.token_bos()] + ids[i:i + CTX - 1]
        llm.reset()
        llm.eval(w[:-1])
        lg = np.array(llm.scores[: len(w) - 1], dtype=np.float64)
        m = lg.max(axis=1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(lg - m).sum(axis=1)))
        total += float((lse - lg[np.arange(len(w) - 1), w[1:]]).sum())
        count += len(w) - 1
    return total / count, count


base, n = nll(None)
with_lora, _ = nll(LORA)
res = {"ctx": CTX, "tokens": n, "nll_base": base, "nll_lora": with_lora, "ppl_base": math.exp(base), "ppl_lora": math.exp(with_lora)}
json.dump(res, open(OUT, "w"), indent=1)
print(json.dumps(res))
