#!/usr/bin/env python3
"""Tiny random Gemma 4 "unified" (the 12B's architecture) text checkpoint plus
goldens from transformers 5.24.

    ~/.cache/gemma-rs/venv-torch/bin/python tools/reference/make_tiny_gemma4_unified.py testdata

transformers' `Gemma4UnifiedForCausalLM` (model_type `gemma4_unified_text`)
is the Gemma 4 dense decoder without per-layer embeddings or MoE (its config
removes those fields). tiny-gemma4-unified exercises what the 12B uses:
sliding (head_dim 16, 2 KV heads) and full (global_head_dim 32, 1 global KV
head, attention_k_eq_v) layers, proportional partial RoPE on full layers,
window 5 shorter than the test sequences, per-layer output scales, final
softcap 30. Same layout and golden format as make_tiny_gemma4.py.
"""
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import Gemma4UnifiedForCausalLM
from transformers.models.gemma4_unified.configuration_gemma4_unified import Gemma4UnifiedTextConfig

sys.path.insert(0, os.path.dirname(__file__))
from make_tiny_gemma4 import randomize, save_with_goldens  # noqa: E402


def main():
    tok = Tokenizer.from_file(os.path.join(sys.argv[1] if len(sys.argv) > 1 else "testdata", "tiny-gemma3", "tokenizer.json"))
    vocab = tok.get_vocab_size()
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0}}
    cfg = Gemma4UnifiedTextConfig(
        vocab_size=vocab, hidden_size=48, num_attention_heads=4, head_dim=16, global_head_dim=32,
        num_key_value_heads=2, num_global_key_value_heads=1, attention_k_eq_v=True, num_hidden_layers=6,
        intermediate_size=64, layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
        max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=True, sliding_window=5,
        rope_parameters=rope, hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=30.0,
        bos_token_id=2, eos_token_id=[1, tok.token_to_id("<end_of_turn>")], pad_token_id=0,
        attn_implementation="eager")
    cfg.architectures = ["Gemma4UnifiedForCausalLM"]
    torch.manual_seed(0)
    model = Gemma4UnifiedForCausalLM(cfg)
    randomize(model, 45)
    save_with_goldens(model.float().eval(), "tiny-gemma4-unified", tok)


if __name__ == "__main__":
    main()
