#!/usr/bin/env python3
"""Renderings of FunctionGemma's published chat template by transformers.

    ~/.cache/gemma-rs/venv-tmpl/bin/python tools/reference/make_functiongemma_template_goldens.py testdata

(a venv with only `transformers==5.24.*` and `jinja2`: no torch needed).

- testdata/templates/functiongemma.jinja: the template `google/functiongemma-270m-it`
  ships, as TRL carried it (huggingface/trl, trl/chat_templates/functiongemma.jinja at
  commit 5507e82ac766f3f7e4e893e84402c40e3d25f449, Apache-2.0; TRL compared a
  checkpoint's template to it byte for byte to recognize FunctionGemma). Committed,
  not written by this script.
- testdata/templates/goldens_functiongemma.json: transformers'
  `apply_chat_template(messages, tools=…, add_generation_prompt=…, tokenize=False)`
  of it on conversations covering the developer role (and system turned into it),
  tool declarations with nested object/array/enum parameters, calls with string,
  number, boolean, list and object arguments, tool results as strings and
  mappings, several calls in one turn, content given as parts, and refusals.
"""
import json
import os
import sys

from transformers import AutoTokenizer

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "description": "City name"},
               "unit": {"type": "string", "description": "Unit", "enum": ["celsius", "fahrenheit"]},
               "days": {"type": "integer", "description": "Forecast days"}}, "required": ["city"]}}}
EVENT = {"type": "function", "function": {"name": "create_event", "description": "Add an event to the calendar",
         "parameters": {"type": "object", "properties": {
             "title": {"type": "string", "description": "Title"},
             "when": {"type": "object", "description": "Start", "properties": {
                 "date": {"type": "string", "description": "ISO date"},
                 "hour": {"type": "integer", "description": "Hour"}}, "required": ["date"]},
             "guests": {"type": "array", "description": "Emails", "items": {"type": "string"}},
             "private": {"type": "boolean", "description": "Hide details"}},
             "required": ["title", "when"]}}}
NOARGS = {"type": "function", "function": {"name": "now", "description": "The current time"}}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
CALL2 = {"id": "c2", "type": "function", "function": {"name": "create_event", "arguments": {
    "title": "Lunch", "when": {"date": "2026-12-02", "hour": 12}, "guests": ["a@x.org", "b@x.org"], "private": True}}}
CONVERSATIONS = [
    ("user", [{"role": "user", "content": "Hello there"}], None),
    ("system", [{"role": "system", "content": " You are terse. "}, {"role": "user", "content": "Hi"}], None),
    ("developer", [{"role": "developer", "content": "You can call functions."}, {"role": "user", "content": "Hi"}], None),
    ("tools", [{"role": "user", "content": "Weather in Paris?"}], [WEATHER, EVENT, NOARGS]),
    ("developer_and_tools", [{"role": "developer", "content": "Use the tools."},
                             {"role": "user", "content": "Book lunch"}], [EVENT]),
    ("call_pending", [{"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "tool_calls": [CALL]}], [WEATHER]),
    ("round_trip", [{"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny, 21 C"}], [WEATHER]),
    ("round_trip_answered", [{"role": "user", "content": "Weather in Paris?"},
                             {"role": "assistant", "tool_calls": [CALL]},
                             {"role": "tool", "name": "get_weather", "content": {"sky": "sunny", "temp": 21}},
                             {"role": "assistant", "content": "Sunny, 21 C."},
                             {"role": "user", "content": "Thanks"}], [WEATHER]),
    ("two_calls", [{"role": "user", "content": "Weather and book lunch"},
                   {"role": "assistant", "content": "On it.", "tool_calls": [CALL, CALL2]},
                   {"role": "tool", "content": [{"name": "get_weather", "response": {"sky": "rain"}},
                                                {"name": "create_event", "response": {"ok": True, "id": 7}}]}],
     [WEATHER, EVENT]),
    ("response_mapping", [{"role": "user", "content": "Weather?"},
                          {"role": "assistant", "tool_calls": [CALL]},
                          {"role": "tool", "content": {"name": "get_weather", "response": {"sky": "fog", "wind": [3, 5]}}}],
     [WEATHER]),
    ("content_parts", [{"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
                       {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": " there"}]}],
     None),
    ("tool_without_name", [{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [CALL]},
                           {"role": "tool", "content": "sunny"}], [WEATHER]),
    ("bad_content", [{"role": "user", "content": 5}], None),
]


def main():
    tdir = os.path.join(OUT, "templates")
    source = open(os.path.join(tdir, "functiongemma.jinja"), encoding="utf-8").read()
    hf = AutoTokenizer.from_pretrained(os.path.join(OUT, "tiny-functiongemma"))
    hf.chat_template = source
    goldens = []
    for label, msgs, tools in CONVERSATIONS:
        for add in [True, False]:
            entry = {"template": "functiongemma", "case": label, "messages": msgs, "tools": tools,
                     "add_generation_prompt": add, "kwargs": {}}
            try:
                entry["text"] = hf.apply_chat_template(msgs, tools=tools, add_generation_prompt=add, tokenize=False)
            except Exception as e:  # noqa: BLE001 - recorded: the template refuses this conversation
                entry["error"] = type(e).__name__ + ": " + str(e)[:200]
            goldens.append(entry)
    json.dump(goldens, open(os.path.join(tdir, "goldens_functiongemma.json"), "w"), indent=1, ensure_ascii=False)
    print("wrote", len(goldens), "renderings,", sum("error" in g for g in goldens), "refused")


if __name__ == "__main__":
    main()
