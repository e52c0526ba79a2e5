#!/usr/bin/env python3
"""Tiny random Gemma 3n text checkpoints plus goldens from transformers 5.x.

    python tools/reference/make_tiny_gemma3n.py testdata

Same layout and golden format as make_tiny_gemmas.py (tokenizer: tiny-gemma3's),
built to exercise every Gemma 3n text feature:

- tiny-gemma3n (Gemma3nForCausalLM): AltUp with 4 streams (predict, correct,
  the scaled first stream feeding the per-layer input, the final unembedding
  and magnitude rescale), LAuReL (rank 4), per-layer embeddings (P = 8, their
  own table over the first 400 ids only: ids 400..419 read row 0), activation
  sparsity 0.95 on the first two layers (the gaussian top-k cut-off bites on
  random weights), KV sharing for the last two layers (layer 4 reads layer 3's
  sliding cache, layer 5 reads layer 2's full one: inside every test
  sequence), per-layer FFN widths, window 5 shorter than the test sequences,
  different local/global RoPE bases, plain x̂·w norms, scale-free value norm,
  attention scale 1, final softcap 3 so it bites.
- tiny-gemma3n-mm: the same text weights in the layout of
  Gemma3nForConditionalGeneration (`model.language_model.` prefix and a nested
  `text_config`; no towers: building them needs timm). Goldens copied.

Norm weights and scales are drawn around 1 (Gemma 3n norms are x̂·w).
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

sys.path.insert(0, os.path.dirname(__file__))
from make_tiny_gemmas import goldens, sequences  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            around_one = "norm" in name or name.endswith("scale")
            if around_one:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def main():
    tok = Tokenizer.from_file(os.path.join(OUT, "tiny-gemma3", "tokenizer.json"))
    vocab = tok.get_vocab_size()
    eos_ids = [1, tok.token_to_id("<end_of_turn>")]
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}
    cfg = Gemma3nTextConfig(
        vocab_size=vocab, vocab_size_per_layer_input=400, hidden_size=48, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_hidden_layers=6, intermediate_size=[64, 64, 96, 64, 80, 64],
        layer_types=["sliding_attention", "sliding_attention", "full_attention",
                     "sliding_attention", "sliding_attention", "full_attention"],
        sliding_window=5, rope_parameters=rope, max_position_embeddings=256, rms_norm_eps=1e-6,
        hidden_size_per_layer_input=8, altup_num_inputs=4, altup_active_idx=0, altup_correct_scale=True,
        laurel_rank=4, num_kv_shared_layers=2, activation_sparsity_pattern=[0.95, 0.95, 0.0, 0.0, 0.0, 0.0],
        final_logit_softcapping=3.0, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        bos_token_id=2, eos_token_id=eos_ids, pad_token_id=0, attn_implementation="eager")
    cfg.architectures = ["Gemma3nForCausalLM"]
    torch.manual_seed(0)
    model = Gemma3nForCausalLM(cfg)
    randomize(model, 44)
    model = model.float().eval()
    folder = os.path.join(OUT, "tiny-gemma3n")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    model.save_pretrained(folder, safe_serialization=True)
    src = os.path.join(OUT, "tiny-gemma3")
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(src, f), os.path.join(folder, f))
    seqs = sequences(tok, vocab)
    # One sequence with ids past the per-layer table (they read its row 0).
    seqs.append([2, 401, 17, 419, 400, 33, 410, 5, 99, 418])
    goldens(model, seqs, folder, seqs[5][1:] + seqs[2][1:], 16, [seqs[1], seqs[3][:9]], {"dtype": "float32"})
    print("wrote", folder)

    # The multimodal layout, text part only.
    mm = os.path.join(OUT, "tiny-gemma3n-mm")
    shutil.rmtree(mm, ignore_errors=True)
    os.makedirs(mm)
    text_cfg = json.load(open(os.path.join(folder, "config.json")))
    text_cfg.pop("architectures", None)
    text_cfg["model_type"] = "gemma3n_text"
    top = {"architectures": ["Gemma3nForConditionalGeneration"], "model_type": "gemma3n", "text_config": text_cfg,
           "dtype": "float32", "transformers_version": text_cfg.get("transformers_version")}
    json.dump(top, open(os.path.join(mm, "config.json"), "w"), indent=2)
    w = load_file(os.path.join(folder, "model.safetensors"))
    renamed = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v for k, v in w.items()}
    save_file(renamed, os.path.join(mm, "model.safetensors"), metadata={"format": "pt"})
    for f in ["tokenizer.json", "tokenizer_config.json", "goldens.json", "goldens.safetensors", "generation_config.json"]:
        if os.path.exists(os.path.join(folder, f)):
            shutil.copy(os.path.join(folder, f), os.path.join(mm, f))
    print("wrote", mm)


if __name__ == "__main__":
    main()
