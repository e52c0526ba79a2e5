#!/usr/bin/env python3
"""Tiny random Gemma3ForConditionalGeneration (SigLIP tower + projector +
the tiny Gemma 3 text model) and its goldens, for the vision tests.

    python tools/reference/make_tiny_gemma3_vision.py testdata/tiny-gemma3-vision

Writes config.json, model.safetensors (as transformers saves it) and
goldens.safetensors: `pixel_values` [2, 3, 42, 42] (two random images,
already preprocessed), `image_features` [2, 9, 48] (tower + projector),
`ids` (a prompt with both images' soft-token runs), `token_type_ids`,
`logits` [len, vocab], `logits_causal` (the same with token_type_ids
omitted: every image token causal, which a test must tell apart). The text
model's sliding window (4) is shorter than an image's run (9 tokens).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(7)
BOI, EOI, IMG = 417, 418, 419
text = dict(vocab_size=420, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, query_pre_attn_scalar=20, sliding_window=4, max_position_embeddings=256, rms_norm_eps=1e-6,
            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}},
            bos_token_id=2, eos_token_id=[1, 6], pad_token_id=0)
vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_channels=3, image_size=42,
              patch_size=7, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", vision_use_head=False)
cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=9, boi_token_index=BOI, eoi_token_index=EOI,
                   image_token_index=IMG, dtype="float32")
model = Gemma3ForConditionalGeneration(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        # Random everywhere, norms included (zeros would hide a missing `1 +`).
        p.copy_(torch.randn_like(p) * (0.3 if p.dim() == 1 else 0.2))
model.save_pretrained(out, safe_serialization=True)

pixel_values = torch.rand(2, 3, 42, 42) * 2 - 1
ids = [2, 10, 11, BOI] + [IMG] * 9 + [EOI, 12, 13, 14, BOI] + [IMG] * 9 + [EOI, 15, 16]
input_ids = torch.tensor([ids])
token_type_ids = (input_ids == IMG).long()
with torch.no_grad():
    feats = model.model.get_image_features(pixel_values, return_dict=True).pooler_output
    logits = model(input_ids=input_ids, pixel_values=pixel_values, token_type_ids=token_type_ids).logits[0]
    causal = model(input_ids=input_ids, pixel_values=pixel_values).logits[0]
assert (logits - causal).abs().max() > 1e-3, "the bidirectional span changes nothing: pick another seed"
save_file({"pixel_values": pixel_values.contiguous(), "image_features": feats.contiguous(), "ids": input_ids[0].contiguous(),
           "token_type_ids": token_type_ids[0].contiguous(), "logits": logits.contiguous(), "logits_causal": causal.contiguous()},
          os.path.join(out, "goldens.safetensors"))
print("wrote", out, "image features", tuple(feats.shape), "max |bidirectional - causal| logits", float((logits - causal).abs().max()))

# Preprocessing goldens: PNG files of several sizes and modes, and the
# pixel values transformers' Gemma3ImageProcessor makes of them at 42×42
# (the torchvision backend, transformers 5's default; the PIL backend too).
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.models.gemma3.image_processing_gemma3 import Gemma3ImageProcessor  # noqa: E402
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil  # noqa: E402

rng = np.random.default_rng(3)
imgdir = os.path.join(out, "images")
os.makedirs(imgdir, exist_ok=True)
yy, xx = np.mgrid[0:61, 0:97]
smooth = np.stack([(xx * 2.5) % 256, (yy * 4.1) % 256, (xx + yy) % 256], -1)
images = {
    "rgb_50x30.png": Image.fromarray((rng.integers(0, 256, (30, 50, 3))).astype(np.uint8), "RGB"),
    "rgba_20x20.png": Image.fromarray(rng.integers(0, 256, (20, 20, 4)).astype(np.uint8), "RGBA"),
    "palette_97x61.png": Image.fromarray(smooth.astype(np.uint8), "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
    "gray_42x42.png": Image.fromarray(rng.integers(0, 256, (42, 42)).astype(np.uint8), "L"),
    "smooth_97x61.png": Image.fromarray(smooth.astype(np.uint8), "RGB"),
}
pixels = {}
for name, im in images.items():
    im.save(os.path.join(imgdir, name))
    loaded = Image.open(os.path.join(imgdir, name))
    for tag, proc in [("torchvision", Gemma3ImageProcessor(size={"height": 42, "width": 42})), ("pil", Gemma3ImageProcessorPil(size={"height": 42, "width": 42}))]:
        pixels[f"{name}.{tag}"] = proc(images=loaded, return_tensors="pt")["pixel_values"][0].contiguous()
    d = (pixels[f"{name}.torchvision"] - pixels[f"{name}.pil"]).abs().max().item()
    print(f"{name}: torchvision vs PIL backend differ by {d * 127.5:.1f} levels")
save_file(pixels, os.path.join(out, "pixel_goldens.safetensors"))
