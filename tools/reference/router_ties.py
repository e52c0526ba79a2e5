#!/usr/bin/env python3
"""Where a MoE router nearly ties: for each golden sequence of a tiny Gemma 4
MoE checkpoint, the first position at which, in some layer, the k-th and
(k+1)-th expert probabilities (transformers, f32) differ by less than 1e-4.
Past such a position an f16 rounding (llama.cpp's KV cache, ours in GGUF
numerics) may pick the other expert, and everything after it differs; the
llama.cpp parity test compares the positions before it.

    python tools/reference/router_ties.py testdata tiny-gemma4-moe
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import Gemma4ForCausalLM

OUT, NAME = sys.argv[1], sys.argv[2]
TIE = 1e-4
model = Gemma4ForCausalLM.from_pretrained(os.path.join(OUT, NAME)).float().eval()
g = load_file(os.path.join(OUT, NAME, "goldens.safetensors"))
k_top = model.config.top_k_experts
probs = []
for mod in [m for n, m in model.named_modules() if n.endswith("router")]:
    mod.register_forward_hook(lambda mod, inp, out: probs.append(out[0]))
first, margins = {}, {}
k = 0
while f"seq{k}.ids" in g:
    ids = g[f"seq{k}.ids"]
    probs.clear()
    with torch.no_grad():
        model(ids[None])
    m = torch.stack([p.sort(-1, descending=True)[0][:, k_top - 1] - p.sort(-1, descending=True)[0][:, k_top] for p in probs]).min(0)[0]
    ties = (m < TIE).nonzero().flatten().tolist()
    first[f"seq{k}"] = ties[0] if ties else len(ids)
    margins[f"seq{k}"] = float(m.min())
    k += 1
out = {"tie": TIE, "first_tie": first, "min_margin": margins}
json.dump(out, open(os.path.join(OUT, "llama_cpp", f"{NAME}-ties.json"), "w"), indent=1)
print(out)
