#!/usr/bin/env python3
"""TRL SFTTrainer's token ids and loss masks for our three data formats and
both loss masks, on the tiny Gemma 3 tokenizer with the official Gemma 3
chat template (TRL swaps in its Gemma 3 *training* template, with
{% generation %} markers, for assistant-only loss).

    ~/.cache/gemma-rs/venv-torch/bin/python tools/reference/make_trl_fixtures.py testdata

Writes testdata/finetune/trl/: tokenizer.json and tokenizer_config.json (the
tiny tokenizer with TRL's gemma3.jinja as its chat template) and
trl_cases.json: per case the data lines, the SFTConfig loss settings, and
TRL's input_ids and mask (1 where the label is the token, 0 where -100).
Needs torch, transformers, trl (PyPI).
"""
import json
import os
import sys
import tempfile

import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
DIR = os.path.join(OUT, "finetune", "trl")
os.makedirs(DIR, exist_ok=True)
# The tiny tokenizer.json has no post-processor; give it the real Gemma
# tokenizer's (BOS before every text), since BOS is mandatory for Gemma.
tj = json.load(open(os.path.join(OUT, "tiny-gemma3", "tokenizer.json")))
tj["post_processor"] = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "<bos>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
}
json.dump(tj, open(os.path.join(DIR, "tokenizer.json"), "w"), ensure_ascii=False)
cfg = json.load(open(os.path.join(OUT, "tiny-gemma3", "tokenizer_config.json")))
cfg["chat_template"] = open(os.path.join(os.path.dirname(trl.__file__), "chat_templates", "gemma3.jinja")).read()
json.dump(cfg, open(os.path.join(DIR, "tokenizer_config.json"), "w"), indent=1)
tok = AutoTokenizer.from_pretrained(DIR)
model = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "tiny-gemma3"))

conv = [
    {"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi, how are you?"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a b c"},
                  {"role": "assistant", "content": "d e"}, {"role": "user", "content": "f"}, {"role": "assistant", "content": "g h i"}]},
]
text = [{"text": "the quick brown fox"}, {"text": "jumps over\nthe lazy dog."}]
pc = [{"prompt": "Question: 2+2?\nAnswer:", "completion": " 4"}, {"prompt": "say hi", "completion": " hi there"}]
pc_conv = [{"prompt": [{"role": "user", "content": "name a color"}], "completion": [{"role": "assistant", "content": "blue"}]}]
cases = [
    ("text", text, "auto", {}),
    ("messages", conv, "auto", {}),
    ("messages-assistant-only", conv, "assistant-only", {"assistant_only_loss": True}),
    ("prompt-completion", pc, "auto", {}),
    ("prompt-completion-all", pc, "all", {"completion_only_loss": False}),
    ("prompt-completion-messages", pc_conv, "auto", {}),
]
out = []
for name, lines, mask, kw in cases:
    with tempfile.TemporaryDirectory() as d:
        args = SFTConfig(output_dir=d, report_to=[], max_length=256, use_cpu=True, bf16=False, **kw)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(lines), processing_class=tok)
        rows = list(trainer.train_dataset)
        batch = trainer.data_collator(rows)
    ids, masks = [], []
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids.append(list(r["input_ids"]))
        masks.append([int(v != -100) for v in batch["labels"][i][:n].tolist()])
    out.append({"name": name, "mask": mask, "lines": lines, "ids": ids, "targets": masks})
    print(name, [len(x) for x in ids], [sum(m) for m in masks])
json.dump(out, open(os.path.join(DIR, "trl_cases.json"), "w"), indent=1)
