#!/usr/bin/env python3
"""Tiny random Gemma4ForConditionalGeneration (Gemma 4 vision tower +
embed_vision + a small dense Gemma 4 text model, no audio) and its goldens,
for the Gemma 4 vision tests.

    python tools/reference/make_tiny_gemma4_vision.py testdata/tiny-gemma4-vision

Needs torch, transformers 5.x, pillow and torchvision (the torchvision image
processor is only compared with the PIL one). Writes:

- config.json, model.safetensors (as transformers saves them), and
  tokenizer.json / tokenizer_config.json / generation_config.json: the tiny
  Gemma 3 tokenizer (ids 0-419) with Gemma 4's multimodal and turn tokens
  appended as special tokens: 420 `<|image>` (boi), 421 `<image|>` (eoi),
  422 `<|image|>` (image soft token), 423 `<|audio>`, 424 `<audio|>`,
  425 `<|audio|>`, 426 `<|video|>`, 427 `<|turn>`, 428 `<turn|>`, and the
  published Gemma 4 chat template (testdata/templates/gemma4_v5.jinja).
  Gemma4Processor requires the audio tokens even for images (its
  validate_inputs tests boa/eoa) and adds `<|video|>` itself.
- The text model: hidden 48, 4 layers [sliding, full, sliding, full], window 4
  (shorter than an image's run of soft tokens), full layers with head_dim 32
  and proportional RoPE, `use_bidirectional_attention="vision"` (image tokens
  attend to their whole image on sliding layers only), final softcap 30.
- The vision tower: hidden 32, 2 layers, 2 heads of 16, patch 4, pooling 3,
  position table 128 (images up to 128 patches a side: the 1120 budget), axial RoPE theta 100, `standardize` (random std_bias /
  std_scale), clipped linears with finite random bounds (some values clip).
  Norm weights are random around 1 (Gemma 4 norms are x̂·w).
- preprocessor_config.json: the image processor's settings (max_soft_tokens
  70, patch 4, pooling 3), as a Hub checkpoint carries them.
- images/*.png: test pictures of several modes and sizes (exact_120x84.png
  needs no resize at the 70-token budget, here nor in llama.cpp).
- goldens.safetensors: two images preprocessed by Gemma4ImageProcessorPil
  (max_soft_tokens 70, patch 4, pooling 3): `pixel_values_{i}` [630, 48],
  `position_ids_{i}` [630, 2] (padding rows -1), `vision_out_{i}` [n_i, 32]
  (the vision model's output: pooled, scaled, standardized),
  `image_features_{i}` [n_i, 48] (after embed_vision: what replaces the image
  placeholders), `num_soft_tokens` [2]; a prompt `ids` with both images' runs,
  `mm_token_type_ids` (1 on image soft tokens), `logits` [len, vocab] and
  `logits_causal` (mm_token_type_ids left out: every token causal).
- chat_goldens.safetensors: a user turn with two images (palette_97x61.png,
  rgba_20x20.png) and text through Gemma4Processor with the PIL image
  processor: `ids`, `mm_token_type_ids`, `last_logits`, 8 `greedy` tokens.
- pixel_goldens.safetensors + pixel_goldens.json: for each PNG, the PIL
  processor's pixel values (padding rows dropped) as `NAME.pixel_levels`
  uint8 [real patches, 48] (pixel_values = levels as f32 / 255, exactly) and
  `NAME.position_ids` int64 [real patches, 2] (x, y); the JSON gives the
  original (w, h), the resized (h, w) and num_soft_tokens.
"""
import json
import os
import re
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer
from transformers import AutoTokenizer, Gemma4Config, Gemma4ForConditionalGeneration, Gemma4Processor
from transformers.models.gemma4 import modeling_gemma4 as mg
from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig, Gemma4VisionConfig
from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
from transformers.models.gemma4.video_processing_gemma4 import Gemma4VideoProcessor

out = sys.argv[1]
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
here = os.path.dirname(os.path.abspath(__file__))
testdata = os.path.join(here, "..", "..", "testdata")
torch.manual_seed(7)

# ---- tokenizer ---------------------------------------------------------------
# Gemma 4's token strings, as its tokenizer_config.json names them
# (boi_token, eoi_token, image_token, boa_token, eoa_token, audio_token,
# sot_token, eot_token); <|video|> is the processor's own.
EXTRA = ["<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>", "<|video|>", "<|turn>", "<turn|>"]
tok = Tokenizer.from_file(os.path.join(testdata, "tiny-gemma3", "tokenizer.json"))
base = tok.get_vocab_size()
tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in EXTRA])
ID = {t: tok.token_to_id(t) for t in EXTRA}
assert list(ID.values()) == list(range(base, base + len(EXTRA))), ID
BOI, EOI, IMG = ID["<|image>"], ID["<image|>"], ID["<|image|>"]
EOT = ID["<turn|>"]
VOCAB = tok.get_vocab_size()
tok.save(os.path.join(out, "tokenizer.json"))
template = open(os.path.join(testdata, "templates", "gemma4_v5.jinja")).read()
tc = json.load(open(os.path.join(testdata, "tiny-gemma3", "tokenizer_config.json")))
named = {"boi_token": "<|image>", "eoi_token": "<image|>", "image_token": "<|image|>", "boa_token": "<|audio>",
         "eoa_token": "<audio|>", "audio_token": "<|audio|>", "sot_token": "<|turn>", "eot_token": "<turn|>"}
tc["chat_template"] = template
tc.update(named)
tc["extra_special_tokens"] = named
json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)

# ---- model -------------------------------------------------------------------
PATCH, POOL, MAX_SOFT = 4, 3, 70
MAX_PATCHES = MAX_SOFT * POOL * POOL
text = Gemma4TextConfig(
    vocab_size=VOCAB, vocab_size_per_layer_input=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32, max_position_embeddings=2048,
    rms_norm_eps=1e-6, tie_word_embeddings=True, sliding_window=4, hidden_activation="gelu_pytorch_tanh",
    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                     "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                        "rope_theta": 1000000.0}},
    hidden_size_per_layer_input=0, num_kv_shared_layers=0, enable_moe_block=False, final_logit_softcapping=30.0,
    use_bidirectional_attention="vision", bos_token_id=2, eos_token_id=[1, EOT], pad_token_id=0)
vision = Gemma4VisionConfig(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
    patch_size=PATCH, pooling_kernel_size=POOL, position_embedding_size=128, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "axial", "rope_theta": 100.0}, standardize=True, use_clipped_linears=True,
    hidden_activation="gelu_pytorch_tanh")
cfg = Gemma4Config(text_config=text, vision_config=vision, audio_config=None, boi_token_id=BOI, eoi_token_id=EOI,
                   image_token_id=IMG, boa_token_id=ID["<|audio>"], eoa_token_index=ID["<audio|>"],
                   audio_token_id=ID["<|audio|>"], video_token_id=ID["<|video|>"], dtype="float32")
cfg.architectures = ["Gemma4ForConditionalGeneration"]
model = Gemma4ForConditionalGeneration._from_config(cfg, attn_implementation="eager").float().eval()

g = torch.Generator().manual_seed(11)
with torch.no_grad():
    # Parameters and the persistent buffers (layer_scalar, std_bias/std_scale,
    # the clip bounds); the non-persistent ones (embedding scale, RoPE tables)
    # are not saved.
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("input_min", "output_min"):
            p.copy_(-torch.rand(p.shape, generator=g) * 2 - 0.5)
        elif leaf in ("input_max", "output_max"):
            p.copy_(torch.rand(p.shape, generator=g) * 2 + 0.5)
        elif leaf == "std_bias":
            p.copy_(torch.randn(p.shape, generator=g))
        elif "norm" in name or leaf in ("layer_scalar", "std_scale"):
            p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.3)
        elif "inv_freq" in leaf or leaf == "embed_scale":
            continue
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
model.save_pretrained(out, safe_serialization=True)
# (after save_pretrained, which writes the model's own)
json.dump({"bos_token_id": 2, "eos_token_id": [1, EOT], "pad_token_id": 0, "do_sample": True, "top_k": 64, "top_p": 0.95},
          open(os.path.join(out, "generation_config.json"), "w"), indent=2)
saved = load_file(os.path.join(out, "model.safetensors"))
clip_keys = [k for k in saved if k.rsplit(".", 1)[-1] in ("input_min", "input_max", "output_min", "output_max")]
std_keys = [k for k in saved if k.endswith("std_bias") or k.endswith("std_scale")]
print(f"model.safetensors: {len(saved)} tensors, {len(clip_keys)} clip bounds (e.g. {clip_keys[0]}), {std_keys}")
assert len(clip_keys) == 4 * 7 * vision.num_hidden_layers and len(std_keys) == 2, "a buffer was not saved"

# Clipping counts: how many inputs / outputs of the clipped linears clip.
clips = {"in": 0, "out": 0, "n_in": 0, "n_out": 0}


def count_clips(mod, args, output):
    x = args[0]
    clips["in"] += int(((x < mod.input_min) | (x > mod.input_max)).sum())
    clips["n_in"] += x.numel()
    y = mod.linear(torch.clamp(x, mod.input_min, mod.input_max))
    clips["out"] += int(((y < mod.output_min) | (y > mod.output_max)).sum())
    clips["n_out"] += y.numel()


hooks = [m.register_forward_hook(count_clips) for m in model.modules() if isinstance(m, mg.Gemma4ClippableLinear)]

# ---- images ------------------------------------------------------------------
rng = np.random.default_rng(3)
imgdir = os.path.join(out, "images")
os.makedirs(imgdir)


def smooth(w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([(xx * 2.5) % 256, (yy * 4.1) % 256, (xx + 2 * yy) % 256], -1).astype(np.uint8), "RGB")


images = {
    "rgb_50x30.png": Image.fromarray(rng.integers(0, 256, (30, 50, 3)).astype(np.uint8), "RGB"),
    "rgba_20x20.png": Image.fromarray(rng.integers(0, 256, (20, 20, 4)).astype(np.uint8), "RGBA"),
    "palette_97x61.png": smooth(97, 61).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
    "gray_42x42.png": Image.fromarray(rng.integers(0, 256, (42, 42)).astype(np.uint8), "L"),
    "wide_200x23.png": smooth(200, 23),
    "tall_23x200.png": smooth(23, 200),
    "large_300x200.png": smooth(300, 200),
    "tiny_5x5.png": Image.fromarray(rng.integers(0, 256, (5, 5, 3)).astype(np.uint8), "RGB"),
    # Exactly the 70-token budget (10x7 pooled cells of 12 px): no resize in
    # transformers nor in llama.cpp (scripts/check-mmproj-llama-cpp.sh).
    "exact_120x84.png": smooth(120, 84),
}
for name, im in images.items():
    im.save(os.path.join(imgdir, name))

kw = dict(max_soft_tokens=MAX_SOFT, patch_size=PATCH, pooling_kernel_size=POOL)
pil_proc = Gemma4ImageProcessorPil(**kw)
tv_proc = Gemma4ImageProcessor(**kw)

# ---- pixel goldens -----------------------------------------------------------
pixels, meta, errors = {}, {}, {}
for name in images:
    loaded = Image.open(os.path.join(imgdir, name))
    try:
        a = pil_proc(images=loaded, return_tensors="pt")
    except Exception as e:  # noqa: BLE001 - reported, the image left out
        errors[name] = f"{type(e).__name__}: {e}"
        print(f"{name}: PIL processor raised {errors[name]}")
        continue
    b = tv_proc(images=loaded, return_tensors="pt")
    n = int(a["num_soft_tokens_per_image"][0])
    real = n * POOL * POOL
    pv, pos = a["pixel_values"][0], a["image_position_ids"][0]
    assert (pos[real:] == -1).all() and (pos[:real] >= 0).all() and (pv[real:] == 0).all()
    # The PIL backend's values are uint8 levels / 255 (f64 product, rounded
    # to f32: the same as an f32 division); stored as the levels to keep the
    # folder small.
    levels = torch.round(pv[:real].double() * 255).to(torch.uint8)
    assert pv.dtype == torch.float32 and torch.equal(levels.float() / 255, pv[:real])
    pixels[f"{name}.pixel_levels"] = levels.contiguous()
    pixels[f"{name}.position_ids"] = pos[:real].long().contiguous()
    resized = [int(pos[:real, 1].max() + 1) * PATCH, int(pos[:real, 0].max() + 1) * PATCH]
    meta[name] = {"original_wh": list(loaded.size), "mode": loaded.mode, "resized_hw": resized, "num_soft_tokens": n}
    d = float((a["pixel_values"] - b["pixel_values"]).abs().max())
    same_pos = bool((a["image_position_ids"] == b["image_position_ids"]).all())
    print(f"{name} ({loaded.mode} {loaded.size[0]}x{loaded.size[1]}) -> {resized[0]}x{resized[1]} (h x w), {n} soft tokens;"
          f" torchvision vs PIL backend: max diff {d * 255:.1f} levels, positions same: {same_pos}")
save_file(pixels, os.path.join(out, "pixel_goldens.safetensors"))
json.dump({"processor": "Gemma4ImageProcessorPil", "max_soft_tokens": MAX_SOFT, "patch_size": PATCH,
           "pooling_kernel_size": POOL, "images": meta, "errors": errors},
          open(os.path.join(out, "pixel_goldens.json"), "w"), indent=1)

# ---- vision goldens and a hand-built prompt ------------------------------------
GOLDEN_IMAGES = ["rgb_50x30.png", "gray_42x42.png"]
proc = pil_proc(images=[Image.open(os.path.join(imgdir, n)) for n in GOLDEN_IMAGES], return_tensors="pt")
pv_all, pos_all = proc["pixel_values"].float(), proc["image_position_ids"].long()
nsoft = [int(n) for n in proc["num_soft_tokens_per_image"]]
gold = {"num_soft_tokens": torch.tensor(nsoft, dtype=torch.int64)}
with torch.no_grad():
    for i in range(2):
        pv, pos = pv_all[i:i + 1], pos_all[i:i + 1]
        vout = model.model.vision_tower(pixel_values=pv, pixel_position_ids=pos).last_hidden_state
        feats = model.model.get_image_features(pv, pos, return_dict=True).pooler_output
        assert len(feats) == 1 and feats[0].shape == (nsoft[i], 48) and vout.shape == (nsoft[i], 32)
        assert torch.allclose(feats[0], model.model.embed_vision(vout), atol=0)
        gold[f"pixel_values_{i}"] = pv[0].contiguous()
        gold[f"position_ids_{i}"] = pos[0].contiguous()
        gold[f"vision_out_{i}"] = vout.contiguous()
        gold[f"image_features_{i}"] = feats[0].contiguous()
    # Both images in one batch: the same features (padding stays out).
    both = model.model.get_image_features(pv_all, pos_all, return_dict=True).pooler_output
    for i in range(2):
        assert (both[i] - gold[f"image_features_{i}"]).abs().max() < 1e-5
print(f"clipped linears: {clips['in']}/{clips['n_in']} inputs and {clips['out']}/{clips['n_out']} outputs clip")
for h in hooks:
    h.remove()

enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
ids = ([2] + enc("Compare") + [BOI] + [IMG] * nsoft[0] + [EOI] + enc(" and") + [BOI] + [IMG] * nsoft[1] + [EOI]
       + enc(" please."))
input_ids = torch.tensor([ids])
mm_token_type_ids = (input_ids == IMG).long()
with torch.no_grad():
    logits = model(input_ids=input_ids, pixel_values=pv_all, image_position_ids=pos_all,
                   mm_token_type_ids=mm_token_type_ids).logits[0]
    causal = model(input_ids=input_ids, pixel_values=pv_all, image_position_ids=pos_all).logits[0]
diff = float((logits - causal).abs().max())
assert diff > 1e-3, "the bidirectional spans change nothing: pick another seed"
gold.update({"ids": input_ids[0].contiguous(), "mm_token_type_ids": mm_token_type_ids[0].contiguous(),
             "logits": logits.contiguous(), "logits_causal": causal.contiguous()})
save_file(gold, os.path.join(out, "goldens.safetensors"))
print(f"goldens: {len(ids)} ids, soft tokens {nsoft}, max |bidirectional - causal| logits {diff:.4f}")

# The masks Gemma4Model builds: full layers causal, sliding layers
# (kv > q - window) AND (causal OR same image).
L = len(ids)
blocks = mg.get_block_sequence_ids_for_mask(mm_token_type_ids, device="cpu")
masks = mg.create_masks_for_vision_model(config=model.config.get_text_config(), inputs_embeds=torch.zeros(1, L, 48),
                                         attention_mask=None, cache=None, position_ids=torch.arange(L)[None],
                                         block_sequence_ids=blocks)
q, k = torch.arange(L)[:, None], torch.arange(L)[None, :]
same = (blocks[0][:, None] == blocks[0][None, :]) & (blocks[0][:, None] >= 0)
want = {"full_attention": k <= q, "sliding_attention": (k > q - text.sliding_window) & ((k <= q) | same)}
for kind, m in masks.items():
    allowed = (m[0, 0] == 0) if m.dtype.is_floating_point else m[0, 0]
    assert torch.equal(allowed, want[kind]), kind
print("masks: full layers causal; sliding layers (kv > q - 4) & (causal | same image): an image token sees every later"
      " token of its image, earlier ones only within the window")

# ---- chat goldens through Gemma4Processor --------------------------------------
CHAT_IMAGES = ["palette_97x61.png", "rgba_20x20.png"]
hf_tok = AutoTokenizer.from_pretrained(out)
processor = Gemma4Processor(feature_extractor=Gemma4AudioFeatureExtractor(), image_processor=Gemma4ImageProcessorPil(**kw),
                            tokenizer=hf_tok, video_processor=Gemma4VideoProcessor(), chat_template=template)
assert len(hf_tok) == VOCAB, "the processor added a token"
# The image processor's settings beside the model, as a Hub checkpoint has
# them (gemma-rs reads max_soft_tokens from here).
Gemma4ImageProcessorPil(**kw).save_pretrained(out)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe both images."}]}]
text_prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(text=text_prompt, images=[Image.open(os.path.join(imgdir, n)) for n in CHAT_IMAGES], return_tensors="pt")
print("chat prompt:", repr(text_prompt))
expanded = hf_tok.decode(inputs["input_ids"][0])
print("expanded:", repr(re.sub(r"(<\|image\|>)+", lambda m: f"<|image|>×{len(m.group(0)) // 9}", expanded)))
with torch.no_grad():
    last = model(**inputs).logits[0, -1]
    greedy = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
save_file({"ids": inputs["input_ids"][0].contiguous(), "mm_token_type_ids": inputs["mm_token_type_ids"][0].contiguous(),
           "last_logits": last.contiguous(), "greedy": greedy.contiguous()}, os.path.join(out, "chat_goldens.safetensors"))
print(f"chat: {inputs['input_ids'].shape[1]} ids, keys {sorted(inputs.keys())}, greedy {greedy.tolist()}")
for d, _, fs in os.walk(out):
    for f in fs:
        os.chmod(os.path.join(d, f), 0o644)
total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
print(f"wrote {out}: {total / 1e6:.2f} MB")
