#!/usr/bin/env python3
"""Assistant tool calls rendered by Google's published Gemma 4 chat templates.

    ~/.cache/gemma-rs/venv-tmpl/bin/python tools/reference/make_gemma4_tool_call_goldens.py testdata

(a venv with only `transformers==5.24.*` and `jinja2`: no torch needed).

For each published Gemma 4 template (testdata/templates/gemma4*.jinja, see the
README there) and each conversation below, transformers'
`apply_chat_template(messages, tools=…, tokenize=False)` renders an assistant
turn that carries OpenAI-style `tool_calls` (arguments given as mappings, as
the templates require). The text between the first `<|tool_call>` and the last
`<tool_call|>` is what the model writes when it calls those tools; the
server's parser must read it back into the same calls (same names, arguments
equal as JSON). Writes testdata/templates/goldens_gemma4_tool_calls.json:
{transformers, tools, renderings: [{template, case, calls: [{name, arguments}],
call_text}]}. The templates before gemma4_v5 write a null argument as `None`.
"""
import json
import os
import sys

import transformers
from transformers import AutoTokenizer

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
TEMPLATES = ["gemma4_v2", "gemma4_v3", "gemma4", "gemma4_v4", "gemma4_v5"]


def tool(name, properties):
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool",
            "parameters": {"type": "object", "properties": properties, "required": sorted(properties)[:1]}}}


TOOLS = [
    tool("get_weather", {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["C", "F"]}}),
    tool("write_file", {"path": {"type": "string"}, "content": {"type": "string"}}),
    tool("search", {"query": {"type": "string"}, "filters": {"type": "object"}, "limit": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}}}),
    tool("set_values", {"ratio": {"type": "number"}, "count": {"type": "integer"}, "big": {"type": "integer"},
                        "enabled": {"type": "boolean"}, "nothing": {"type": "string", "nullable": True}}),
    {"type": "function", "function": {"name": "now", "description": "The current time"}},
]

# case name -> the calls of one assistant turn (name, arguments)
CASES = {
    "string": [("get_weather", {"city": "Paris"})],
    "string_and_number": [("get_weather", {"city": "São Paulo", "days": 3, "unit": "C"})],
    "quotes_and_braces": [("write_file", {"path": "src/main.rs",
                                          "content": 'fn main() { println!("{}", "a, b: c"); }\n// it\'s "done" [ok]'})],
    "json_in_a_string": [("write_file", {"path": "x.json", "content": '{"a": [1, 2], "b": {"c": null}}'})],
    "empty_and_spaces": [("write_file", {"path": " padded ", "content": ""})],
    "unicode_and_newlines": [("write_file", {"path": "notes.md", "content": "line 1\nline 2\n\ttabbed — “curly” 日本語 🎉"})],
    "numbers": [("set_values", {"ratio": 0.125, "count": -42, "big": 12345678901234, "enabled": True, "nothing": None})],
    "floats": [("set_values", {"ratio": 3.0, "count": 0, "big": 0, "enabled": False})],
    "small_and_large_floats": [("set_values", {"ratio": 1.5e-07, "count": 1, "big": 1, "enabled": True}),
                               ("set_values", {"ratio": 2.5e+20, "count": 2, "big": 2, "enabled": False})],
    "nested_object": [("search", {"query": "rust", "filters": {"lang": "en", "year": {"from": 2020, "to": 2026},
                                                                  "sites": ["a.org", "b.org"], "strict": False}})],
    "array_of_objects": [("search", {"query": "x", "filters": {"any": [{"k": "v"}, {"k": "w", "n": [1, [2, 3]]}]},
                                     "tags": ["a", "b, c", "{d}"]})],
    "empty_containers": [("search", {"query": "empty", "filters": {}, "tags": []})],
    "no_arguments": [("now", {})],
    "several_calls": [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome", "days": 2}),
                      ("now", {})],
    "mixed_calls": [("write_file", {"path": "a.txt", "content": "A"}), ("search", {"query": "b", "limit": 5})],
}


def main():
    tdir = os.path.join(OUT, "templates")
    hf = AutoTokenizer.from_pretrained(os.path.join(OUT, "tiny-gemma4-it"))
    goldens = []
    for name in TEMPLATES:
        hf.chat_template = open(os.path.join(tdir, name + ".jinja"), encoding="utf-8").read()
        for case, calls in CASES.items():
            tool_calls = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                          for i, (n, a) in enumerate(calls)]
            msgs = [{"role": "user", "content": "Please do it."}, {"role": "assistant", "tool_calls": tool_calls}]
            text = hf.apply_chat_template(msgs, tools=TOOLS, tokenize=False)
            start, end = text.find("<|tool_call>"), text.rfind("<tool_call|>")
            assert start >= 0 and end > start, f"{name}/{case}: no tool call in {text!r}"
            goldens.append({"template": name, "case": case, "calls": [{"name": n, "arguments": a} for n, a in calls],
                            "call_text": text[start:end + len("<tool_call|>")]})
    path = os.path.join(tdir, "goldens_gemma4_tool_calls.json")
    json.dump({"transformers": transformers.__version__, "tools": TOOLS, "renderings": goldens},
              open(path, "w", encoding="utf-8"), indent=1, ensure_ascii=False)
    print("wrote", len(goldens), "renderings to", path)


if __name__ == "__main__":
    main()
