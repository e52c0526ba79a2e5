#!/usr/bin/env python3
"""Build tiny random Gemma 1/2/3 checkpoints plus golden outputs from transformers.

Run once on a machine with torch + transformers + tokenizers (see
tools/reference/requirements.txt); the outputs under testdata/ are committed so
that CI never needs torch:

    python tools/reference/make_tiny_gemmas.py testdata

Per model folder (Hugging Face layout): config.json, model.safetensors (or
shards + model.safetensors.index.json), tokenizer.json, tokenizer_config.json,
generation_config.json, and goldens.safetensors with, for each sequence k:
  seq{k}.ids     int64 [T]          the input ids (BOS first)
  seq{k}.logits  f32   [T, vocab]   logits at every position
and greedy.{k}.prompt / greedy.{k}.ids (int64) for greedy continuations,
plus goldens.json with the perplexity golden and metadata.
"""
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
import transformers
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3TextConfig,
                          Gemma3ForCausalLM, GemmaConfig, GemmaForCausalLM,
                          PreTrainedTokenizerFast)

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Gemma is a family of lightweight, state-of-the-art open models.",
    "Once upon a time there was a tiny model that learned to count: one two three four five.",
    "def add(a, b):\n    return a + b\n",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Question: what is two plus two? Answer: four.",
    "the the the and and of of to to in in is is it it",
] * 20

# Gemma's chat format, written for this project (roles user/model, system
# folded into the first user turn, strict alternation).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def build_tokenizer():
    """A tiny BPE laid out like Gemma's: control tokens first, then the 256
    byte-fallback tokens <0x00>..<0xFF> as ordinary vocabulary entries (not
    special tokens), then merges learned on a small corpus."""
    trainer = trainers.BpeTrainer(vocab_size=420 - len(BYTES), special_tokens=SPECIALS, show_progress=False)
    draft = Tokenizer(models.BPE(unk_token="<unk>"))
    draft.normalizer = normalizers.Replace(" ", "\u2581")
    draft.train_from_iterator(CORPUS, trainer=trainer)
    learned = json.loads(draft.to_str())["model"]
    vocab = {t: i for i, t in enumerate(SPECIALS + BYTES)}
    for tok_str, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if tok_str not in vocab:
            vocab[tok_str] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(SPECIALS)
    return tok


def write_tokenizer_files(tok, folder, eos_ids):
    tok.save(os.path.join(folder, "tokenizer.json"))
    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "GemmaTokenizer",
        "model_max_length": 256,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 2, "eos_token_id": eos_ids, "pad_token_id": 0,
                   "do_sample": True, "top_k": 64, "top_p": 0.95}, f, indent=2)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.3 if "norm" in name else 0.2
            p.copy_(torch.randn(p.shape, generator=g) * std)


TEXTS = [
    "The quick brown fox",
    "Once upon a time there was a tiny model that learned to count: one two three four five six seven.",
    "def add(a, b):\n    return a + b\n\nQuestion: what is two plus two? Answer: four. Paris is the capital of France.",
    "\u00e9t\u00e9 \u65e5\u672c \U0001F600 end",
]


def sequences(tok, vocab):
    seqs = [[2]]  # BOS alone: the 1-token case
    for t in TEXTS:
        seqs.append([2] + tok.encode(t, add_special_tokens=False).ids)
    g = torch.Generator().manual_seed(7)
    seqs.append([2] + torch.randint(7, vocab, (70,), generator=g).tolist())
    return seqs


@torch.no_grad()
def goldens(model, seqs, folder, ppl_ids, ppl_ctx, greedy_prompts, extra):
    out = {}
    for k, ids in enumerate(seqs):
        x = torch.tensor([ids])
        logits = model(x).logits[0].float()
        out[f"seq{k}.ids"] = torch.tensor(ids, dtype=torch.int64)
        out[f"seq{k}.logits"] = logits.contiguous()
    for k, p in enumerate(greedy_prompts):
        gen = model.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
        out[f"greedy.{k}.prompt"] = torch.tensor(p, dtype=torch.int64)
        out[f"greedy.{k}.ids"] = gen[0, len(p):].clone().to(torch.int64)
    save_file(out, os.path.join(folder, "goldens.safetensors"))
    # Perplexity, the way `gemma perplexity --tokens` defines it: consecutive
    # windows of ctx ids as given, each from an empty cache, every position
    # after the first scored; mean NLL over all scored positions.
    nll_sum, count = 0.0, 0
    for s in range(0, len(ppl_ids), ppl_ctx):
        w = ppl_ids[s:s + ppl_ctx]
        if len(w) < 2:
            continue
        logits = model(torch.tensor([w])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for t in range(1, len(w)):
            nll_sum -= logp[t - 1, w[t]].item()
            count += 1
    meta = {"ppl_ids": ppl_ids, "ppl_ctx": ppl_ctx, "ppl_tokens": count, "ppl_nll": nll_sum / count,
            "ppl": math.exp(nll_sum / count), "transformers": transformers.__version__,
            "torch": torch.__version__}
    meta.update(extra)
    with open(os.path.join(folder, "goldens.json"), "w") as f:
        json.dump(meta, f, indent=1)


def save_model(model, folder, dtype, eos_ids, tok):
    os.makedirs(folder, exist_ok=True)
    model.to(dtype)
    model.save_pretrained(folder, safe_serialization=True)
    write_tokenizer_files(tok, folder, eos_ids)


def make(name, config_cls, model_cls, kwargs, tok, seed, dtypes=("float32", "bfloat16")):
    vocab = tok.get_vocab_size()
    eot = tok.token_to_id("<end_of_turn>")
    eos_ids = [1, eot]
    for dt in dtypes:
        cfg = config_cls(vocab_size=vocab, bos_token_id=2, eos_token_id=eos_ids, pad_token_id=0,
                         attn_implementation="eager", **kwargs)
        torch.manual_seed(0)
        model = model_cls(cfg)
        randomize(model, seed)
        model = model.to(getattr(torch, dt)).eval()
        folder = os.path.join(OUT, name if dt == "float32" else f"{name}-{dt[:4] if dt == 'bfloat16' else 'f16'}")
        if dt == "bfloat16":
            folder = os.path.join(OUT, f"{name}-bf16")
        shutil.rmtree(folder, ignore_errors=True)
        save_model(model, folder, getattr(torch, dt), eos_ids, tok)
        seqs = sequences(tok, vocab)
        prompts = [seqs[1], seqs[3][:9]]
        ppl_ids = seqs[5][1:] + seqs[2][1:]
        goldens(model, seqs, folder, ppl_ids, 16, prompts, {"dtype": dt})
        print("wrote", folder)


def make_multimodal_sharded(src, dst):
    """Re-save a Gemma 3 text checkpoint the way Gemma3ForConditionalGeneration
    checkpoints look: config under text_config, weights under
    language_model.model.*, split over two shards with an index."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    with open(os.path.join(src, "config.json")) as f:
        text_cfg = json.load(f)
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
           "text_config": text_cfg, "vision_config": {"model_type": "siglip_vision_model"},
           "mm_tokens_per_image": 256, "boi_token_index": 255999, "eoi_token_index": 256000,
           "image_token_index": 262144, "dtype": text_cfg.get("dtype", "float32")}
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    renamed = {"language_model." + k: v for k, v in tensors.items()}
    names = sorted(renamed)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: renamed[k] for k in keys}, os.path.join(dst, fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(v.numel() * v.element_size() for v in renamed.values())},
                   "weight_map": weight_map}, f, indent=2)
    for extra in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "goldens.safetensors",
                  "goldens.json"]:
        shutil.copy(os.path.join(src, extra), os.path.join(dst, extra))
    print("wrote", dst)


def tokenizer_and_chat_goldens(tok_folder):
    hf = PreTrainedTokenizerFast.from_pretrained(tok_folder)
    texts = TEXTS + ["", " ", "  two  spaces  ", "line\nbreak\ttab", "<start_of_turn>user\nhi<end_of_turn>",
                     "\u00fcber caf\u00e9 na\u00efve", "\u4f60\u597d\uff0c\u4e16\u754c", "12345 + 678 = 13023"]
    enc = [{"text": t, "ids": hf(t, add_special_tokens=False)["input_ids"]} for t in texts]
    convs = [
        [{"role": "user", "content": "Hello!"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " What is 2+2? "}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": "Bye"}],
    ]
    chats = []
    for c in convs:
        for agp in (True, False):
            chats.append({"messages": c, "add_generation_prompt": agp,
                          "text": hf.apply_chat_template(c, tokenize=False, add_generation_prompt=agp)})
    with open(os.path.join(OUT, "tokenizer_goldens.json"), "w") as f:
        json.dump({"encode": enc, "chat": chats}, f, indent=1, ensure_ascii=False)
    print("wrote tokenizer_goldens.json")


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = build_tokenizer()
    common = dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, head_dim=16,
                  max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=True)
    make("tiny-gemma1", GemmaConfig, GemmaForCausalLM,
         dict(common, num_hidden_layers=2, num_key_value_heads=1, hidden_act="gelu_pytorch_tanh",
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), tok, seed=1)
    make("tiny-gemma2", Gemma2Config, Gemma2ForCausalLM,
         dict(common, num_hidden_layers=3, num_key_value_heads=2, hidden_activation="gelu_pytorch_tanh",
              query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
              sliding_window=5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
         tok, seed=2)
    make("tiny-gemma3", Gemma3TextConfig, Gemma3ForCausalLM,
         dict(common, num_hidden_layers=4, num_key_value_heads=2, hidden_activation="gelu_pytorch_tanh",
              query_pre_attn_scalar=20, sliding_window=4,
              layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
              rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}),
         tok, seed=3, dtypes=("float32", "bfloat16", "float16"))
    make_multimodal_sharded(os.path.join(OUT, "tiny-gemma3"), os.path.join(OUT, "tiny-gemma3-mm-sharded"))
    tokenizer_and_chat_goldens(os.path.join(OUT, "tiny-gemma3"))


if __name__ == "__main__":
    main()
