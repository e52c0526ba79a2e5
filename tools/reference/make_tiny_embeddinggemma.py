#!/usr/bin/env python3
"""Tiny random EmbeddingGemma (sentence-transformers folder) plus goldens.

    python tools/reference/make_tiny_embeddinggemma.py testdata

EmbeddingGemma is `Gemma3TextModel` with bidirectional attention (sliding
layers see |i - j| <= sliding_window / 2) followed by sentence-transformers
modules: mean pooling, two bias-free Dense layers, L2 normalization. The
fixture uses tiny-gemma3's tokenizer (BOS and EOS added, as EmbeddingGemma's
tokenizer does), a window of 8 on disk (radius 4) shorter than the test
texts, norm weights around 0 so `(1 + w)` bites, and EmbeddingGemma's
prompts. goldens.json holds sentence-transformers' ids and embeddings
(`encode` with each prompt), and the `truncate_dim` + renormalized ones.
"""
import json
import os
import shutil
import sys

import torch
from sentence_transformers import SentenceTransformer, models
from transformers import Gemma3TextConfig, Gemma3TextModel

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.", "one two three"]
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


def main():
    folder = os.path.join(OUT, "tiny-embeddinggemma")
    shutil.rmtree(folder, ignore_errors=True)
    base = folder + "-base"
    shutil.rmtree(base, ignore_errors=True)
    cfg = Gemma3TextConfig(vocab_size=420, hidden_size=48, intermediate_size=96, num_hidden_layers=6,
                           num_attention_heads=3, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
                           query_pre_attn_scalar=32, sliding_window=8, use_bidirectional_attention=True,
                           rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
                           rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
                           pad_token_id=0, bos_token_id=2, eos_token_id=1, attn_implementation="eager")
    cfg.architectures = ["Gemma3TextModel"]
    torch.manual_seed(5)
    model = Gemma3TextModel(cfg).eval()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "norm" in n else 0.2))
    model.save_pretrained(base)
    src = os.path.join(OUT, "tiny-gemma3")
    # EmbeddingGemma's tokenizer.json adds BOS and EOS in its post-processor.
    tj = json.load(open(os.path.join(src, "tokenizer.json")))
    tj["post_processor"] = {"type": "TemplateProcessing",
                            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                       {"SpecialToken": {"id": "<eos>", "type_id": 0}}],
                            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                     {"SpecialToken": {"id": "<eos>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                                     {"SpecialToken": {"id": "<eos>", "type_id": 1}}],
                            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]},
                                               "<eos>": {"id": "<eos>", "ids": [1], "tokens": ["<eos>"]}}}
    json.dump(tj, open(os.path.join(base, "tokenizer.json"), "w"), ensure_ascii=False)
    tc = json.load(open(os.path.join(src, "tokenizer_config.json")))
    tc["add_eos_token"] = True
    tc["padding_side"] = "right"
    tc.pop("chat_template", None)
    json.dump(tc, open(os.path.join(base, "tokenizer_config.json"), "w"), indent=2)

    word = models.Transformer(base, max_seq_length=256)
    dense1 = models.Dense(48, 192, bias=False, activation_function=None)
    dense2 = models.Dense(192, 48, bias=False, activation_function=None)
    with torch.no_grad():
        dense1.linear.weight.copy_(torch.randn(dense1.linear.weight.shape, generator=g) * 0.15)
        dense2.linear.weight.copy_(torch.randn(dense2.linear.weight.shape, generator=g) * 0.1)
    st = SentenceTransformer(modules=[word, models.Pooling(48, pooling_mode="mean"), dense1, dense2, models.Normalize()],
                             prompts=PROMPTS, device="cpu")
    st.save(folder)
    shutil.rmtree(base)

    st = SentenceTransformer(folder, device="cpu")
    out = {"texts": TEXTS, "sentence_transformers": __import__("sentence_transformers").__version__}
    for name in [None, "query", "document"]:
        key = name or "none"
        full = [(PROMPTS[name] if name else "") + t for t in TEXTS]
        out[f"{key}.ids"] = [st.tokenize([f])["input_ids"][0].tolist() for f in full]
        out[f"{key}.embeddings"] = st.encode(TEXTS, prompt_name=name, convert_to_numpy=True).tolist()
    trunc = st.encode(TEXTS, prompt_name="query", truncate_dim=16, normalize_embeddings=True, convert_to_numpy=True)
    out["query.dim16"] = trunc.tolist()
    json.dump(out, open(os.path.join(folder, "goldens.json"), "w"), indent=1)
    print("wrote", folder, os.listdir(folder))


if __name__ == "__main__":
    main()
