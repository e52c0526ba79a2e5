#!/usr/bin/env python3
"""Gemma 4 chat fixtures: the published templates, their renderings by
transformers, and a tiny "instruction-tuned" Gemma 4 whose greedy answer
opens and closes a thought.

    python tools/reference/make_tiny_gemma4_it.py testdata

- testdata/templates/*.jinja: Google's published chat templates as TRL 1.16
  (PyPI, Apache-2.0) ships them for identifying models: gemma3 (google/gemma-3-*)
  and gemma4, gemma4_v2..v5 (google/gemma-4-E2B-it at five Hub revisions; see
  testdata/templates/README.md). Copied byte for byte from the installed trl.
- testdata/templates/goldens.json: transformers 5.24
  `apply_chat_template(messages, tools=…, add_generation_prompt=…, **kwargs,
  tokenize=False)` of each template on conversations covering system and
  developer roles, multi-turn history with thoughts in earlier answers,
  `reasoning_content`, tool declarations, calls and results, and
  `enable_thinking` on and off (a template that raises is recorded so).
- testdata/tiny-gemma4-it: tiny-gemma4's random weights with Gemma 4's control
  tokens given to ids of tiny-gemma3's vocabulary (special added tokens; the
  merges that made the old tokens are dropped) and the current published
  template (gemma4_v5). `<|channel>` and `<channel|>` take the ids the model's
  greedy answer to THINK_PROMPT (thinking on) starts with and later emits, so
  the server's thought splitting is tested on a real generation; the expected
  split is in thinking.json.
"""
import json
import os
import shutil
import sys

import torch
import trl
from tokenizers import Tokenizer
from transformers import AutoTokenizer, Gemma4ForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
TRL_TEMPLATES = os.path.join(os.path.dirname(trl.__file__), "chat_templates")
TEMPLATES = ["gemma3", "gemma4", "gemma4_v2", "gemma4_v3", "gemma4_v4", "gemma4_v5"]
CONTROL = ["<|turn>", "<turn|>", "<|think|>", "<|tool_call>", "<tool_call|>", "<|tool>", "<tool|>",
           "<|tool_response>", "<tool_response|>", '<|"|>']
THINK_PROMPT = [{"role": "user", "content": "Why is the sky blue?"}]

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "description": "City name"},
               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
               "days": {"type": "integer", "description": "Forecast days"}}, "required": ["city"]}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
CONVERSATIONS = [
    ("user", [{"role": "user", "content": "Hello there"}], None, {}),
    ("system", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}], None, {}),
    ("developer", [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hi"}], None, {}),
    ("history_with_thought", [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "<|channel>thought\nadd them<channel|>4"},
                              {"role": "user", "content": "and 3+3?"}], None, {}),
    ("history_thinking_on", [{"role": "user", "content": "2+2?"},
                             {"role": "assistant", "content": "<|channel>thought\nadd them<channel|>4"},
                             {"role": "user", "content": "and 3+3?"}], None, {"enable_thinking": True}),
    ("thinking_off", [{"role": "user", "content": "2+2?"}], None, {"enable_thinking": False}),
    ("thinking_on", THINK_PROMPT, None, {"enable_thinking": True}),
    ("tools", [{"role": "user", "content": "Weather in Paris?"}], [WEATHER], {}),
    ("tool_round_trip", [{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "content": "", "tool_calls": [CALL]},
                         {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny, 21 C"}],
     [WEATHER], {"enable_thinking": True}),
    ("reasoning_in_agent_loop", [{"role": "user", "content": "Weather in Paris?"},
                                 {"role": "assistant", "content": "", "reasoning_content": "I should call the tool.",
                                  "tool_calls": [CALL]},
                                 {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"}],
     [WEATHER], {"enable_thinking": True}),
    ("reasoning_in_old_turn", [{"role": "user", "content": "2+2?"},
                               {"role": "assistant", "content": "4", "reasoning_content": "add them"},
                               {"role": "user", "content": "3+3?"}], None, {"enable_thinking": True}),
]


def control_tokenizer(src_tok, ids):
    """tiny-gemma3's tokenizer.json with `ids` = {token: id} as special added tokens."""
    tok = json.loads(json.dumps(src_tok))
    vocab = tok["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    gone = set()
    for new, i in ids.items():
        old = by_id[i]
        vocab.pop(old)
        vocab[new] = i
        gone.add(old)
        tok["added_tokens"].append({"id": i, "content": new, "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": False, "special": True})
    tok["model"]["merges"] = [m for m in tok["model"]["merges"]
                              if "".join(m) not in gone and m[0] not in gone and m[1] not in gone]
    return tok


def write_folder(folder, tok_json, template):
    src = os.path.join(OUT, "tiny-gemma4")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for f in ["config.json", "model.safetensors", "generation_config.json"]:
        shutil.copy(os.path.join(src, f), os.path.join(folder, f))
    json.dump(tok_json, open(os.path.join(folder, "tokenizer.json"), "w"), ensure_ascii=False, indent=1)
    cfg = json.load(open(os.path.join(OUT, "tiny-gemma3", "tokenizer_config.json")))
    cfg["chat_template"] = template
    json.dump(cfg, open(os.path.join(folder, "tokenizer_config.json"), "w"), indent=2)


def main():
    tdir = os.path.join(OUT, "templates")
    os.makedirs(tdir, exist_ok=True)
    sources = {}
    for name in TEMPLATES:
        shutil.copy(os.path.join(TRL_TEMPLATES, name + ".jinja"), os.path.join(tdir, name + ".jinja"))
        sources[name] = open(os.path.join(tdir, name + ".jinja"), encoding="utf-8").read()

    src_tok = json.load(open(os.path.join(OUT, "tiny-gemma3", "tokenizer.json")))
    n = len(src_tok["model"]["vocab"])
    # Control tokens on the last ids; the channel pair chosen below.
    fixed = {t: n - len(CONTROL) + k for k, t in enumerate(CONTROL)}
    folder = os.path.join(OUT, "tiny-gemma4-it")
    write_folder(folder, control_tokenizer(src_tok, fixed), sources["gemma4_v5"])
    hf = AutoTokenizer.from_pretrained(folder)
    prompt = hf.apply_chat_template(THINK_PROMPT, add_generation_prompt=True, enable_thinking=True, tokenize=False)
    ids = Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    model = Gemma4ForCausalLM.from_pretrained(os.path.join(OUT, "tiny-gemma4")).float().eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    gen = out[0, len(ids):].tolist()
    taken = set(fixed.values()) | set(ids) | {0, 1, 2, 3, 4, 5, 6}
    a = gen[0]
    k = next(k for k in range(2, 8) if gen[k] not in taken and gen[k] != a and gen[k] not in gen[:k])
    assert a not in taken and a not in gen[1:k], f"first generated id {a} is not free: pick another prompt"
    chan = dict(fixed, **{"<|channel>": a, "<channel|>": gen[k]})
    write_folder(folder, control_tokenizer(src_tok, chan), sources["gemma4_v5"])
    hf = AutoTokenizer.from_pretrained(folder)
    tk = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    ids2 = tk.encode(prompt, add_special_tokens=False).ids
    assert ids2 == ids, "the prompt tokenizes differently once the channel ids are taken: pick another prompt"
    thinking = {"messages": THINK_PROMPT, "prompt_ids": ids, "generated_ids": gen, "channel_ids": [a, gen[k]],
                "reasoning_content": tk.decode(gen[1:k], skip_special_tokens=True),
                "content": tk.decode(gen[k + 1:], skip_special_tokens=True), "max_tokens": len(gen)}
    json.dump(thinking, open(os.path.join(folder, "thinking.json"), "w"), indent=1, ensure_ascii=False)
    print("wrote", folder, "channel ids", a, gen[k], "generated", gen)

    goldens = []
    for name in TEMPLATES:
        hf.chat_template = sources[name]
        for label, msgs, tools, kwargs in CONVERSATIONS:
            for add in [True, False]:
                entry = {"template": name, "case": label, "messages": msgs, "tools": tools,
                         "add_generation_prompt": add, "kwargs": kwargs}
                try:
                    entry["text"] = hf.apply_chat_template(msgs, tools=tools, add_generation_prompt=add,
                                                           tokenize=False, **kwargs)
                except Exception as e:  # noqa: BLE001 - recorded: the template refuses this conversation
                    entry["error"] = type(e).__name__ + ": " + str(e)[:200]
                goldens.append(entry)
    json.dump(goldens, open(os.path.join(tdir, "goldens.json"), "w"), indent=1, ensure_ascii=False)
    print("wrote", len(goldens), "renderings,", sum("error" in g for g in goldens), "refused")


if __name__ == "__main__":
    main()
