#!/usr/bin/env python3
"""transformers + PEFT goldens for fine-tuning on the real Gemma 3 270M.

    ~/.cache/gemma-rs/venv-torch/bin/python tools/reference/real_model_finetune.py MODEL.gguf testdata/finetune/real-270m

The GGUF is dequantized to f32 into a Hugging Face folder (norms stored as
1+w get the 1 removed), as tools/reference/real_model_transformers.py does.
ADAPTER (testdata/finetune/real-270m) is an adapter written by `gemma
finetune` (rank 2 on q_proj, v_proj, down_proj, three steps so A and B are
both non-zero). Writes into it:
  peft_logits.safetensors  `ids`, `last_logits` [vocab] and the top-20
      `top_ids`/`top_logits` [T, 20] at every position of
      PeftModel.from_pretrained(base, ADAPTER) on a prompt (the check that
      PEFT loads our adapter unchanged)
  golden.json  a batch of two sequences (ids, target masks), its loss (mean
      cross-entropy over the targets), the global LoRA gradient norm and
      each tensor's gradient norm, by PyTorch autograd in float64 (and, under
      "pytorch_f32", the same in float32).
"""
import json
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file

MODEL, ADAPTER = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_to_hf import load  # noqa: E402

base = load(MODEL)
model = PeftModel.from_pretrained(base, ADAPTER, is_trainable=True)

g = torch.Generator().manual_seed(3)
prompt = torch.randint(3, 262144, (12,), generator=g)
prompt[0] = 2
model.eval()
with torch.no_grad():
    logits = model(input_ids=prompt[None]).logits[0].float()
top = torch.topk(logits, 20, dim=1)
save_file({"ids": prompt.to(torch.int64), "last_logits": logits[-1].contiguous(), "top_ids": top.indices.to(torch.int64).contiguous(),
           "top_logits": top.values.contiguous()}, os.path.join(ADAPTER, "peft_logits.safetensors"))

model.train()
seqs, masks = [], []
for n, first in [(40, 1), (25, 10)]:
    ids = torch.randint(3, 262144, (n,), generator=g)
    ids[0] = 2
    seqs.append(ids)
    masks.append([0] * first + [1] * (n - first))


def loss_and_norms(model):
    model.zero_grad()
    total, count = 0.0, 0
    for ids, mask in zip(seqs, masks):
        lg = model(input_ids=ids[None]).logits[0]
        sel = torch.tensor(mask[1:]).bool()
        total = total + torch.nn.functional.cross_entropy(lg[:-1][sel], ids[1:][sel], reduction="sum")
        count += int(sel.sum())
    loss = total / count
    loss.backward()
    params = {n.replace(".default", ""): p for n, p in model.named_parameters() if p.requires_grad}
    norms = {n: float(p.grad.double().norm()) for n, p in params.items()}
    return float(loss), float(torch.sqrt(sum(torch.tensor(v) ** 2 for v in norms.values()))), norms


loss32, gn32, norms32 = loss_and_norms(model)
# The reference: the same function in float64 (PyTorch's own f32 result is
# recorded too, to show how far two f32 implementations may drift apart).
loss, gn, norms = loss_and_norms(model.double())
json.dump({"seqs": [s.tolist() for s in seqs], "masks": masks, "loss": loss, "grad_norm": gn, "tensor_grad_norms": norms,
           "pytorch_f32": {"loss": loss32, "grad_norm": gn32, "tensor_grad_norms": norms32}},
          open(os.path.join(ADAPTER, "golden.json"), "w"), indent=1)
print("f64 loss", loss, "grad_norm", gn, "| f32 loss", loss32, "grad_norm", gn32)
