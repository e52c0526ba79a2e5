#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) on the Gemma 4 GGUF files `gemma quantize` writes.

    python tools/reference/gemma4_gguf_llama_cpp.py testdata

For tiny-gemma4 (per-layer embeddings, KV sharing, double-wide MLP, two head
geometries, partial RoPE) and tiny-gemma4-moe (k_eq_v, experts): write the
f32 GGUF with target/release/gemma quantize, load it in llama.cpp (which
must accept every tensor and key: its loader refuses unknown or missing
tensors), evaluate each golden sequence with all logits, and store them in
testdata/llama_cpp/<name>-gguf.safetensors (`seqK.logits`), with llama.cpp's
max difference from transformers printed. crates/gemma/tests/gguf_gemma4.rs
compares our reading of the same file with them.
"""
import os
import subprocess
import sys

import numpy as np
from llama_cpp import Llama, __version__
from safetensors.numpy import load_file, save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
BIN = os.environ.get("GEMMA_BIN", "target/release/gemma")

for name in ["tiny-gemma4", "tiny-gemma4-moe"]:
    gguf = f"/tmp/{name}-f32.gguf"
    subprocess.run([BIN, "quantize", "--model", os.path.join(OUT, name), "--out", gguf, "--type", "f32"], check=True)
    g = load_file(os.path.join(OUT, name, "goldens.safetensors"))
    llm = Llama(model_path=gguf, n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    out, worst, k = {}, 0.0, 0
    while f"seq{k}.ids" in g:
        ids = g[f"seq{k}.ids"].tolist()
        llm.reset()
        llm.eval(ids)
        got = np.array(llm.scores[:len(ids)], dtype=np.float32)
        out[f"seq{k}.logits"] = got
        worst = max(worst, float(np.abs(got - g[f"seq{k}.logits"]).max()))
        k += 1
    save_file(out, os.path.join(OUT, "llama_cpp", f"{name}-gguf.safetensors"), metadata={"llama_cpp_python": __version__})
    print(f"{name}: llama.cpp {__version__} loads our gemma4 GGUF; max |logit - transformers| = {worst:.4f} over {k} sequences")
