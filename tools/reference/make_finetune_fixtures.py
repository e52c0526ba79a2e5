#!/usr/bin/env python3
"""PyTorch + PEFT goldens for `gemma-train` on the tiny Gemma 1/2/3 and dense Gemma 4 checkpoints.

    ~/.cache/gemma-rs/venv-torch/bin/python tools/reference/make_finetune_fixtures.py testdata [MODEL ...]

MODEL defaults to every model below (tiny-gemma1/2/3 were made with torch 2.15,
transformers 5.24, peft 0.21; so were tiny-gemma4 and tiny-gemma4-unified).
PEFT adapts the seven projections where a layer has them: Gemma 4's
KV-sharing layers have no k_proj/v_proj and its `attention_k_eq_v` layers no
v_proj.

For each tiny model (f32) writes testdata/finetune/<model>/:
  init/       a PEFT LoRA adapter (r=4, alpha=8, all seven projections) with
              random A and B (PEFT's zero B would leave A without gradient)
  golden.safetensors   `ids_K` (int64) and `mask_K` (int64, 1 = token is a
              target) of each sequence K, and `grad.<PEFT tensor name>` of
              every lora_A/lora_B weight for the batch loss
  golden.json {"loss", "grad_norm", "steps": [{"loss", "grad_norm", "lr"}, …]}
              for 10 AdamW steps (lr 5e-3, weight decay 0.01, linear schedule
              with 3 warmup steps, max_grad_norm 1.0) on the same batch.
The batch loss is transformers' causal-LM loss over all sequences: the sum of
the cross-entropy of every target token divided by their number (sequences run
one at a time: no padding, attention never crosses them). Needs torch,
transformers, peft (PyPI); CI only reads the files.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LENGTHS = [9, 14, 6]
LABEL_FROM = [1, 6, 1]  # first target position of each sequence


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    seqs, masks = [], []
    for n, first in zip(LENGTHS, LABEL_FROM):
        ids = torch.randint(3, 420, (n,), generator=g)
        ids[0] = 2
        mask = torch.zeros(n, dtype=torch.int64)
        mask[first:] = 1
        seqs.append(ids)
        masks.append(mask)
    return seqs, masks


def batch_loss(model, seqs, masks):
    total, count = 0.0, 0
    for ids, mask in zip(seqs, masks):
        logits = model(input_ids=ids[None]).logits[0].float()
        tgt = ids[1:]
        sel = mask[1:].bool()
        total = total + torch.nn.functional.cross_entropy(logits[:-1][sel], tgt[sel], reduction="sum")
        count += int(sel.sum())
    return total / count


MODELS = sys.argv[2:] or ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma4", "tiny-gemma4-unified", "tiny-gemma4-moe", "tiny-gemma3n"]
for name in MODELS:
    torch.manual_seed(11)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, name), dtype=torch.float32, attn_implementation="eager")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", target_modules=TARGETS))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.2)
    out = os.path.join(OUT, "finetune", name)
    model.save_pretrained(os.path.join(out, "init"))
    model.train()
    seqs, masks = batch(5)
    params = {n.replace(".default", ""): p for n, p in model.named_parameters() if p.requires_grad}
    loss = batch_loss(model, seqs, masks)
    loss.backward()
    tensors = {}
    for i, (ids, mask) in enumerate(zip(seqs, masks)):
        tensors[f"ids_{i}"] = ids.to(torch.int64)
        tensors[f"mask_{i}"] = mask
    for n, p in params.items():
        tensors["grad." + n] = p.grad.detach().clone().contiguous()
    grad_norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params.values())))
    model.zero_grad()
    opt = torch.optim.AdamW(list(params.values()), lr=5e-3, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=10)
    steps = []
    for step in range(10):
        lr = sched.get_last_lr()[0]
        l = batch_loss(model, seqs, masks)
        l.backward()
        gn = torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        steps.append({"loss": float(l), "grad_norm": float(gn), "lr": lr})
    save_file(tensors, os.path.join(out, "golden.safetensors"))
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump({"loss": float(loss), "grad_norm": grad_norm, "steps": steps}, f, indent=1)
    print(name, float(loss), grad_norm, [round(s["loss"], 5) for s in steps])
