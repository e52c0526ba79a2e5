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
BOI, EOI, IMG = 420, 421, 422
text = dict(vocab_size=423, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
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
# (the chat goldens below use two of these)
# Lossy and animated formats: their decoders may round differently from
# PIL's (libjpeg-turbo's chroma upsampling), so these are compared within a
# tolerance; the first GIF frame is the image.
photo = Image.fromarray(smooth.astype(np.uint8), "RGB").resize((120, 80))
images["photo_120x80.jpg"] = photo
images["photo_120x80.webp"] = photo
frames = [Image.fromarray(rng.integers(0, 256, (33, 47, 3)).astype(np.uint8), "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=32) for _ in range(2)]
pixels = {}
for name, im in images.items():
    if name.endswith(".jpg"):
        im.save(os.path.join(imgdir, name), quality=90)
    elif name.endswith(".webp"):
        im.save(os.path.join(imgdir, name), lossless=True)
    else:
        im.save(os.path.join(imgdir, name))
    loaded = Image.open(os.path.join(imgdir, name))
    for tag, proc in [("torchvision", Gemma3ImageProcessor(size={"height": 42, "width": 42})), ("pil", Gemma3ImageProcessorPil(size={"height": 42, "width": 42}))]:
        pixels[f"{name}.{tag}"] = proc(images=loaded, return_tensors="pt")["pixel_values"][0].contiguous()
    d = (pixels[f"{name}.torchvision"] - pixels[f"{name}.pil"]).abs().max().item()
    print(f"{name}: torchvision vs PIL backend differ by {d * 127.5:.1f} levels")
frames[0].save(os.path.join(imgdir, "anim_47x33.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
# EXIF orientation 6 (the camera was turned: display rotated 90° clockwise),
# lossless WebP so only the orientation is under test; transformers'
# load_image applies it (ImageOps.exif_transpose).
from PIL import ImageOps  # noqa: E402
exif = Image.Exif()
exif[0x0112] = 6
Image.fromarray(rng.integers(0, 256, (30, 50, 3)).astype(np.uint8), "RGB").save(os.path.join(imgdir, "exif6_50x30.webp"), lossless=True, exif=exif)
for name in ["anim_47x33.gif", "exif6_50x30.webp"]:
    loaded = ImageOps.exif_transpose(Image.open(os.path.join(imgdir, name)))
    for tag, proc in [("torchvision", Gemma3ImageProcessor(size={"height": 42, "width": 42})), ("pil", Gemma3ImageProcessorPil(size={"height": 42, "width": 42}))]:
        pixels[f"{name}.{tag}"] = proc(images=loaded, return_tensors="pt")["pixel_values"][0].contiguous()
save_file(pixels, os.path.join(out, "pixel_goldens.safetensors"))


# The tokenizer: the tiny Gemma 3 one plus Gemma 3's three image tokens
# (ids 420-422), and the real Gemma 3 chat template.
import shutil  # noqa: E402
from tokenizers import AddedToken, Tokenizer  # noqa: E402
from transformers import AutoTokenizer, Gemma3Processor  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
testdata = os.path.join(here, "..", "..", "testdata")
tok = Tokenizer.from_file(os.path.join(testdata, "tiny-gemma3", "tokenizer.json"))
tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]])
assert [tok.token_to_id(t) for t in ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]] == [BOI, EOI, IMG]
tok.save(os.path.join(out, "tokenizer.json"))
tc = json.load(open(os.path.join(testdata, "tiny-gemma3", "tokenizer_config.json")))
tc["chat_template"] = open(os.path.join(testdata, "templates", "gemma3.jinja")).read()
tc.update({"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
           "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}})
json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
shutil.copy(os.path.join(testdata, "tiny-gemma3", "generation_config.json"), os.path.join(out, "generation_config.json"))

# A chat turn with two images through transformers' processor: the
# expanded prompt ids, the logits of its last position and 8 greedy tokens.
hf_tok = AutoTokenizer.from_pretrained(out)
processor = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 42, "width": 42}), tokenizer=hf_tok, image_seq_length=9,
                            chat_template=tc["chat_template"])
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe both images."}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
pics = [Image.open(os.path.join(imgdir, n)) for n in ["rgb_50x30.png", "smooth_97x61.png"]]
inputs = processor(text=text, images=pics, return_tensors="pt")
with torch.no_grad():
    last = model(**inputs).logits[0, -1]
    greedy = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
save_file({"ids": inputs["input_ids"][0].contiguous(), "pixel_values": inputs["pixel_values"].contiguous(), "last_logits": last.contiguous(),
           "greedy": greedy.contiguous()}, os.path.join(out, "chat_goldens.safetensors"))
print("chat prompt:", repr(text), len(inputs["input_ids"][0]), "ids; greedy", greedy.tolist())

# Pan-and-scan (off by default, on per request): a wide 800×260 image gets
# 3 crops (ratio 3.1 ≥ 1.2, crops of 267×260 ≥ 256); the prompt holds the
# original's run and one per crop, with the processor's sentence between.
wide = Image.fromarray(np.stack([(xx2 := np.mgrid[0:260, 0:800][1]) % 256, (np.mgrid[0:260, 0:800][0] * 3) % 256, (xx2 // 3) % 256], -1).astype(np.uint8), "RGB")
wide.save(os.path.join(imgdir, "wide_800x260.png"))
pas_proc = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 42, "width": 42}), tokenizer=hf_tok, image_seq_length=9,
                           chat_template=tc["chat_template"])
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
text = pas_proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = pas_proc(text=text, images=[Image.open(os.path.join(imgdir, "wide_800x260.png"))], return_tensors="pt", do_pan_and_scan=True)
with torch.no_grad():
    greedy = model.generate(**{k: v for k, v in inputs.items() if k != "num_crops"}, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1]:]
save_file({"ids": inputs["input_ids"][0].contiguous(), "pixel_values": inputs["pixel_values"].contiguous(), "greedy": greedy.contiguous()},
          os.path.join(out, "pan_and_scan_goldens.safetensors"))
print("pan-and-scan:", inputs["pixel_values"].shape[0], "images (the original and its crops),", len(inputs["input_ids"][0]), "ids; greedy", greedy.tolist())
