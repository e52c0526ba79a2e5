#!/usr/bin/env python3
"""Tiny random Gemma checkpoints in the Hugging Face Flax layout, plus goldens
from transformers 4.x's FlaxGemmaForCausalLM (JAX, f32).

    ~/.cache/gemma-rs/venv-flax/bin/python tools/reference/make_tiny_flax_gemma.py testdata
    (venv: pip install "transformers<5" "jax[cpu]" flax safetensors)

The launch shipped Gemma 1 as Flax weights too (`revision="flax"`); Flax
Gemma 2/3/4 models do not exist in transformers. tiny-gemma1's config and
tokenizer, new random weights:

- tiny-gemma-flax: `flax_model.msgpack` (nested param dicts, kernels [in, out]).
- tiny-gemma-flax-sharded: the same weights in shards with
  `flax_model.msgpack.index.json` (max_shard_size 40KB).
- tiny-gemma-flax-both: tiny-gemma1's `model.safetensors` beside these Flax
  weights: a folder with both must load the safetensors (tiny-gemma1's
  goldens apply).

Goldens: `seqK.ids` / `seqK.logits` for tiny-gemma1's golden sequences,
computed by the Flax model itself.
"""
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from safetensors.numpy import load_file, save_file
from transformers import FlaxGemmaForCausalLM, GemmaConfig

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
SRC = os.path.join(OUT, "tiny-gemma1")


def main():
    cfg_json = json.load(open(os.path.join(SRC, "config.json")))
    cfg_json["hidden_act"] = "gelu_pytorch_tanh"
    cfg = GemmaConfig(**{k: v for k, v in cfg_json.items() if k not in ("transformers_version", "dtype", "rope_parameters",
                                                                        "use_bidirectional_attention", "architectures")})
    cfg.architectures = ["GemmaForCausalLM"]
    model = FlaxGemmaForCausalLM(cfg, seed=0, dtype=jnp.float32)
    rng = np.random.default_rng(5)
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: (rng.standard_normal(p.shape) * (0.3 if "norm" in jax.tree_util.keystr(path) else 0.2)).astype(np.float32),
        model.params)
    model.params = params
    golden = load_file(os.path.join(SRC, "goldens.safetensors"))
    out, k = {}, 0
    while f"seq{k}.ids" in golden:
        ids = golden[f"seq{k}.ids"]
        logits = model(jnp.asarray(ids[None].astype(np.int32))).logits[0]
        out[f"seq{k}.ids"] = ids
        out[f"seq{k}.logits"] = np.asarray(logits, dtype=np.float32)
        k += 1
    for name, shard in [("tiny-gemma-flax", None), ("tiny-gemma-flax-sharded", "40KB"), ("tiny-gemma-flax-both", None)]:
        folder = os.path.join(OUT, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        if shard:
            model.save_pretrained(folder, params=params, max_shard_size=shard)
        else:
            model.save_pretrained(folder, params=params)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(SRC, f), os.path.join(folder, f))
        if name.endswith("both"):
            shutil.copy(os.path.join(SRC, "model.safetensors"), os.path.join(folder, "model.safetensors"))
            shutil.copy(os.path.join(SRC, "goldens.safetensors"), os.path.join(folder, "goldens.safetensors"))
        else:
            save_file(out, os.path.join(folder, "goldens.safetensors"))
        print("wrote", folder, sorted(os.listdir(folder)))
    print("transformers", transformers.__version__, "jax", jax.__version__)


if __name__ == "__main__":
    main()
