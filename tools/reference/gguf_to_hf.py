"""Dequantize the real Gemma 3 GGUF into a transformers Gemma3ForCausalLM
(f32; norms stored as 1+w get the 1 removed). Shared by the reference and
benchmark scripts; needs torch, transformers, gguf (PyPI)."""
import json
import os
import tempfile

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM

PARTS = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
         "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm", "ffn_gate": "mlp.gate_proj",
         "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "post_ffw_norm": "post_feedforward_layernorm"}


def load(path, attn="eager"):
    r = GGUFReader(path)
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
        del tensors
        return Gemma3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation=attn)
