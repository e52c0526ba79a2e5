#!/usr/bin/env python3
"""Golden logits of transformers on the real Gemma 3 270M weights: the GGUF
is dequantized to f32 (norms stored as 1+w get the 1 removed) into a Hugging
Face folder and run with Gemma3ForCausalLM in f32, eager attention. Since
both engines then compute the same function of the same weights, gemma-rs
(weights expanded to f32, f32 KV cache) must agree to float rounding; this
separates our correctness from llama.cpp's approximations.

    python tools/reference/real_model_transformers.py MODEL.gguf testdata/llama_cpp

Uses the prompt of testdata/llama_cpp/logits.safetensors; writes
transformers_logits.safetensors (last-position logits, top-10 ids per position)
and prints how far llama.cpp is from transformers.
"""
import os
import sys

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

MODEL, OUT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_to_hf import load  # noqa: E402

model = load(MODEL).eval()
llama = load_file(os.path.join(OUT, "logits.safetensors"))
ids = llama["prompt_ids"].tolist()
with torch.no_grad():
    lg = model(torch.tensor([ids])).logits[0].numpy()
save_file({"prompt_ids": np.array(ids, dtype=np.int64), "last_logits": lg[-1].copy(),
           "top10": np.argsort(-lg, axis=1)[:, :10].astype(np.int64)}, os.path.join(OUT, "transformers_logits.safetensors"))
d = np.abs(llama["last_logits"] - lg[-1])
print(f"llama.cpp vs transformers (last position): max |diff| {d.max():.4f}, mean {d.mean():.4f}")
print("wrote", os.path.join(OUT, "transformers_logits.safetensors"))
