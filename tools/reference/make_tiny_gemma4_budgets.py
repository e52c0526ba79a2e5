#!/usr/bin/env python3
"""Goldens for Gemma 4's large soft-token budgets (560 and 1120), whose
image runs are longer than gemma-rs's 512-token forward chunk, on the tiny
fixture made by make_tiny_gemma4_vision.py:

    python tools/reference/make_tiny_gemma4_budgets.py testdata/tiny-gemma4-vision

Needs torch, transformers 5.x and pillow. For each budget B, one user turn
with images/large_300x200.png and a question, through Gemma4Processor with
the PIL image processor at max_soft_tokens=B (patch 4, pooling 3). Writes
budget_goldens.safetensors with, per budget (`{B}.` prefix):

- `ids`, `mm_token_type_ids`: the expanded prompt (B soft tokens or fewer);
- `level_sum` int64 [1]: the sum of the image's 8-bit levels (the pixel
  values × 255) and `patches` int64 [1]: its real patches (padding dropped),
  checking the preprocessing without storing every level;
- `feature_rows` int64 [r], `features` [r, 48]: every 16th soft token's
  image feature (after embed_vision);
- `logit_rows` int64 [r], `logits` [r, vocab]: prompt rows inside and after
  the image run (the full forward);
- `greedy` [6]: transformers' greedy continuation (cached decode after the
  long run).
"""
import os
import sys

import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoTokenizer, Gemma4ForConditionalGeneration, Gemma4Processor
from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
from transformers.models.gemma4.video_processing_gemma4 import Gemma4VideoProcessor

folder = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
template = open(os.path.join(here, "..", "..", "testdata", "templates", "gemma4_v5.jinja")).read()
model = Gemma4ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(folder)
IMAGE = "large_300x200.png"
image = Image.open(os.path.join(folder, "images", IMAGE))
out = {}
for budget in (560, 1120):
    ip = Gemma4ImageProcessorPil(max_soft_tokens=budget, patch_size=4, pooling_kernel_size=3)
    processor = Gemma4Processor(feature_extractor=Gemma4AudioFeatureExtractor(), image_processor=ip, tokenizer=tok,
                                video_processor=Gemma4VideoProcessor(), chat_template=template)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, images=[image], return_tensors="pt")
    ids = inputs["input_ids"][0]
    n = int(inputs["num_soft_tokens_per_image"][0]) if "num_soft_tokens_per_image" in inputs else int((ids == model.config.image_token_id).sum())
    assert int((ids == model.config.image_token_id).sum()) == n and n > 512, (budget, n)
    pos = inputs["image_position_ids"][0]
    real = int((pos[:, 0] >= 0).sum())
    assert real == n * 9
    levels = torch.round(inputs["pixel_values"][0, :real].double() * 255)
    with torch.no_grad():
        feats = model.model.get_image_features(inputs["pixel_values"], inputs["image_position_ids"], return_dict=True).pooler_output[0]
        logits = model(**inputs).logits[0]
        greedy = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, ids.shape[0]:]
    start = int((ids == model.config.image_token_id).nonzero()[0])
    frows = torch.arange(0, n, 16)
    lrows = torch.tensor(sorted(set(list(range(start, start + n, 97)) + [start + n - 1] + list(range(start + n, ids.shape[0])))))
    out.update({f"{budget}.ids": ids.contiguous(), f"{budget}.mm_token_type_ids": inputs["mm_token_type_ids"][0].contiguous(),
                f"{budget}.level_sum": torch.tensor([int(levels.sum())]), f"{budget}.patches": torch.tensor([real]),
                f"{budget}.feature_rows": frows, f"{budget}.features": feats[frows].contiguous(),
                f"{budget}.logit_rows": lrows, f"{budget}.logits": logits[lrows].contiguous(),
                f"{budget}.greedy": greedy.contiguous()})
    print(f"budget {budget}: {n} soft tokens ({real} patches), {ids.shape[0]} ids, image run at {start}, greedy {greedy.tolist()}")
save_file(out, os.path.join(folder, "budget_goldens.safetensors"))
os.chmod(os.path.join(folder, "budget_goldens.safetensors"), 0o644)
print(f"wrote {os.path.join(folder, 'budget_goldens.safetensors')}: {os.path.getsize(os.path.join(folder, 'budget_goldens.safetensors')) / 1e3:.0f} kB")
