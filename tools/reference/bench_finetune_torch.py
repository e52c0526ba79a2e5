#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training speed and peak memory on the real Gemma 3
270M (the GGUF dequantized to f32), for scripts/bench-finetune.sh.

    python tools/reference/bench_finetune_torch.py MODEL.gguf TOKENIZED.jsonl STEPS BATCH RANK ALPHA THREADS

TOKENIZED.jsonl is what `gemma finetune --dry-run` writes ({"ids",
"targets"}), so both sides train on the same tokens: right-padded batches
(labels -100 on padding and on tokens that are not targets), AdamW lr 2e-4,
clipping 1.0, LoRA on all seven projections. Prints one JSON object:
tokens/s over the steps after the first (real tokens, no padding), peak RSS.
"""
import json
import os
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_to_hf import load  # noqa: E402

model_path, data, steps, batch, rank, alpha, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
torch.set_num_threads(threads)
examples = [json.loads(l) for l in open(data)]
model = get_peft_model(load(model_path, attn="sdpa"), LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear"))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
times, tokens = [], []
for step in range(steps):
    b = examples[(step * batch) % len(examples):][:batch]
    n = max(len(e["ids"]) for e in b)
    ids = torch.zeros(len(b), n, dtype=torch.long)
    labels = torch.full((len(b), n), -100, dtype=torch.long)
    mask = torch.zeros(len(b), n, dtype=torch.long)
    for i, e in enumerate(b):
        L = len(e["ids"])
        ids[i, :L] = torch.tensor(e["ids"])
        mask[i, :L] = 1
        labels[i, :L] = torch.tensor([t if m else -100 for t, m in zip(e["ids"], e["targets"])])
    t0 = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - t0)
    tokens.append(int(mask.sum()))
tps = sum(tokens[1:]) / sum(times[1:])
print(json.dumps({"tokens_per_second": tps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "last_loss": float(loss)}))
