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
import tempfile

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from peft import PeftModel
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM

MODEL, ADAPTER = sys.argv[1], sys.argv[2]
PARTS = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
         "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm", "ffn_gate": "mlp.gate_proj",
         "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "post_ffw_norm": "post_feedforward_layernorm"}

r = GGUFReader(MODEL)
meta = lambda k: r.fields[k].contents()
tensors = {}
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
    if t.name == "token_embd.weight":
        k = "model.embed_tokens.weight"
    elif t.name == "output_norm.weight":
        k = "model.norm.weight"
    else:
        _, layer, part, _ = t.name.split(".")
        k = f"model.layers.{layer}.{PARTS[part]}.weight"
    if "norm" in t.name:
        a = a - 1.0
    tensors[k] = torch.from_numpy(np.ascontiguousarray(a))
n_layers = meta("gemma3.block_count")
cfg = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": tensors["model.embed_tokens.weight"].shape[0],
    "hidden_size": meta("gemma3.embedding_length"), "intermediate_size": meta("gemma3.feed_forward_length"),
    "num_hidden_layers": n_layers, "num_attention_heads": meta("gemma3.attention.head_count"),
    "num_key_value_heads": meta("gemma3.attention.head_count_kv"), "head_dim": meta("gemma3.attention.key_length"),
    "max_position_embeddings": meta("gemma3.context_length"), "rms_norm_eps": meta("gemma3.attention.layer_norm_rms_epsilon"),
    "query_pre_attn_scalar": meta("gemma3.attention.key_length"), "sliding_window": meta("gemma3.attention.sliding_window"),
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layers)],
    "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": meta("gemma3.rope.freq_base")},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True, "dtype": "float32",
}
with tempfile.TemporaryDirectory() as d:
    save_file(tensors, os.path.join(d, "model.safetensors"))
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    base = Gemma3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
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
