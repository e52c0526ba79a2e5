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
import json
import os
import sys
import tempfile

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file, save_file
from safetensors.torch import save_file as save_torch
from transformers import Gemma3ForCausalLM

MODEL, OUT = sys.argv[1], sys.argv[2]
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
    save_torch(tensors, os.path.join(d, "model.safetensors"))
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    model = Gemma3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
llama = load_file(os.path.join(OUT, "logits.safetensors"))
ids = llama["prompt_ids"].tolist()
with torch.no_grad():
    lg = model(torch.tensor([ids])).logits[0].numpy()
save_file({"prompt_ids": np.array(ids, dtype=np.int64), "last_logits": lg[-1].copy(),
           "top10": np.argsort(-lg, axis=1)[:, :10].astype(np.int64)}, os.path.join(OUT, "transformers_logits.safetensors"))
d = np.abs(llama["last_logits"] - lg[-1])
print(f"llama.cpp vs transformers (last position): max |diff| {d.max():.4f}, mean {d.mean():.4f}")
print("wrote", os.path.join(OUT, "transformers_logits.safetensors"))
