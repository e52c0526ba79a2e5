#!/usr/bin/env python3
"""PEFT LoRA adapters for the tiny Gemma 3 fixture, with golden logits.

    python tools/reference/make_lora_fixture.py testdata

Writes testdata/tiny-gemma3-lora/ (r=4, alpha=8, every projection) and
testdata/tiny-gemma3-lora-rs/ (rsLoRA, r=2, alpha=3, q_proj and v_proj only),
each an adapter folder as PEFT saves it (adapter_config.json,
adapter_model.safetensors) plus goldens.safetensors (`ids` int64 [T],
`logits` f32 [T, vocab]: transformers + peft with the adapter active).
LoRA B matrices are random (PEFT initializes them to zero, which would make
the test unable to fail). Needs torch, transformers, peft (PyPI).
"""
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
BASE = os.path.join(OUT, "tiny-gemma3")

CASES = {
    "tiny-gemma3-lora": LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none",
                                   target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "tiny-gemma3-lora-rs": LoraConfig(r=2, lora_alpha=3, lora_dropout=0.0, bias="none", use_rslora=True,
                                      target_modules=["q_proj", "v_proj"]),
}

for name, cfg in CASES.items():
    torch.manual_seed(7)
    model = Gemma3ForCausalLM.from_pretrained(BASE, torch_dtype=torch.float32, attn_implementation="eager")
    model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.3)
    model.eval()
    out = os.path.join(OUT, name)
    model.save_pretrained(out)
    ids = torch.tensor([[2, 17, 42, 9, 100, 33, 250, 7, 64, 5, 81, 12]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    save_file({"ids": ids[0].to(torch.int64), "logits": logits.contiguous()}, os.path.join(out, "goldens.safetensors"))
    print(name, "written:", sorted(os.listdir(out)))
