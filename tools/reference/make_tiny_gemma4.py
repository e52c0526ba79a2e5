#!/usr/bin/env python3
"""Tiny random Gemma 4 text checkpoints plus goldens from transformers 5.x.

    python tools/reference/make_tiny_gemma4.py testdata

Two f32 folders, same layout and golden format as make_tiny_gemmas.py
(tokenizer: tiny-gemma3's), built to exercise every Gemma 4 text feature:

- tiny-gemma4 (an "E" model): sliding (head_dim 16) and full (global_head_dim
  32) layers, partial ("proportional") RoPE on full layers, window 5 shorter
  than the test sequences, per-layer embeddings (hidden_size_per_layer_input
  8), KV sharing for the last 3 layers (inside every test sequence), the
  double-wide MLP on those layers, per-layer output scales, final softcap 3.
- tiny-gemma4-moe (a 26B-A4B-like model): attention_k_eq_v on full layers with
  their own KV-head count, the MoE block on every layer (6 experts, top-2,
  uneven routing from random weights) beside the dense MLP.

Norm weights and scales are drawn around 1 (Gemma 4 norms are x̂·w).
"""
import json
import os
import shutil
import sys

import torch
from tokenizers import Tokenizer
from transformers import Gemma4ForCausalLM, Gemma4TextConfig

sys.path.insert(0, os.path.dirname(__file__))
from make_tiny_gemmas import goldens, sequences, write_tokenizer_files  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Parameters, and the one persistent buffer (layer_scalar); the
        # non-persistent ones (embedding scales, RoPE tables) are not saved.
        bufs = [(n, b) for n, b in model.named_buffers() if n.endswith("layer_scalar")]
        for name, p in list(model.named_parameters()) + bufs:
            around_one = "norm" in name or name.endswith("scale") or "layer_scalar" in name
            if around_one:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def make(name, kwargs, tok, seed):
    vocab = tok.get_vocab_size()
    eos_ids = [1, tok.token_to_id("<end_of_turn>")]
    cfg = Gemma4TextConfig(vocab_size=vocab, vocab_size_per_layer_input=vocab, bos_token_id=2,
                           eos_token_id=eos_ids, pad_token_id=0, attn_implementation="eager", **kwargs)
    cfg.architectures = ["Gemma4ForCausalLM"]
    torch.manual_seed(0)
    model = Gemma4ForCausalLM(cfg)
    randomize(model, seed)
    save_with_goldens(model.float().eval(), name, tok)


def save_with_goldens(model, name, tok):
    """Write `model` as testdata/NAME with tiny-gemma3's tokenizer and the goldens."""
    vocab = tok.get_vocab_size()
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    model.save_pretrained(folder, safe_serialization=True)
    src = os.path.join(OUT, "tiny-gemma3")
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(src, f), os.path.join(folder, f))
    seqs = sequences(tok, vocab)
    prompts = [seqs[1], seqs[3][:9]]
    ppl_ids = seqs[5][1:] + seqs[2][1:]
    goldens(model, seqs, folder, ppl_ids, 16, prompts, {"dtype": "float32"})
    print("wrote", folder)


def make_multimodal(src_name, name, tok):
    """The text model of `src_name` inside a Gemma4ForConditionalGeneration
    with a tiny random vision tower: the text part must load and give the
    same logits (goldens recomputed through the multimodal model)."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig
    from transformers.models.gemma4.configuration_gemma4 import Gemma4VisionConfig
    src = os.path.join(OUT, src_name)
    tc = Gemma4TextConfig.from_dict(json.load(open(os.path.join(src, "config.json"))))
    vc = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=2, head_dim=8)
    cfg = Gemma4Config(text_config=tc, vision_config=vc)
    cfg.architectures = ["Gemma4ForConditionalGeneration"]
    torch.manual_seed(1)
    model = Gemma4ForConditionalGeneration(cfg).float().eval()
    text = Gemma4ForCausalLM.from_pretrained(src).float()
    missing = model.model.language_model.load_state_dict(text.model.state_dict(), strict=True)
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    model.save_pretrained(folder, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(src, f), os.path.join(folder, f))
    seqs = sequences(tok, tok.get_vocab_size())
    goldens(model, seqs, folder, seqs[5][1:] + seqs[2][1:], 16, [seqs[1], seqs[3][:9]], {"dtype": "float32"})
    print("wrote", folder, missing)


def main():
    tok = Tokenizer.from_file(os.path.join(OUT, "tiny-gemma3", "tokenizer.json"))
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0}}
    common = dict(hidden_size=48, num_attention_heads=4, head_dim=16, global_head_dim=32,
                  max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  sliding_window=5, rope_parameters=rope, hidden_activation="gelu_pytorch_tanh")
    make("tiny-gemma4", dict(common, num_hidden_layers=6, num_key_value_heads=2, intermediate_size=64,
                             layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                          "sliding_attention", "sliding_attention", "full_attention"],
                             hidden_size_per_layer_input=8, num_kv_shared_layers=3, use_double_wide_mlp=True,
                             final_logit_softcapping=3.0), tok, seed=41)
    make("tiny-gemma4-moe", dict(common, num_hidden_layers=4, num_key_value_heads=2, num_global_key_value_heads=1,
                                 attention_k_eq_v=True, intermediate_size=40, hidden_size_per_layer_input=0,
                                 layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                              "full_attention"],
                                 enable_moe_block=True, num_experts=6, top_k_experts=2, moe_intermediate_size=24,
                                 final_logit_softcapping=30.0), tok, seed=42)
    make_multimodal("tiny-gemma4-moe", "tiny-gemma4-mm", tok)


if __name__ == "__main__":
    main()
