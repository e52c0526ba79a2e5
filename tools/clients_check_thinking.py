"""The official `openai` client against `gemma serve --enable-thinking` on
testdata/tiny-gemma4-it (scripts/check-clients.sh): the thought arrives as
`reasoning_content` (an extra field the client keeps), plain and streamed,
and `reasoning_effort` turns it off."""
import json
import sys

from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
f = json.load(open("testdata/tiny-gemma4-it/thinking.json"))
oa = OpenAI(base_url=base + "/v1", api_key=key)
failed = 0


def check(cond, what):
    global failed
    print(("ok      " if cond else "FAILED  ") + what)
    failed += 0 if cond else 1


r = oa.chat.completions.create(model="tiny", messages=f["messages"], max_tokens=f["max_tokens"], temperature=0)
m = r.choices[0].message
check(getattr(m, "reasoning_content", None) == f["reasoning_content"] and m.content == f["content"],
      f"openai: chat with thinking -> reasoning_content {m.reasoning_content!r}, content {m.content!r}")
parts = {"r": "", "c": ""}
for ch in oa.chat.completions.create(model="tiny", messages=f["messages"], max_tokens=f["max_tokens"], temperature=0, stream=True):
    if ch.choices:
        d = ch.choices[0].delta
        parts["r"] += getattr(d, "reasoning_content", None) or ""
        parts["c"] += d.content or ""
check(parts == {"r": f["reasoning_content"], "c": f["content"]}, "openai: streamed delta.reasoning_content then delta.content")
off = oa.chat.completions.create(model="tiny", messages=f["messages"], max_tokens=4, temperature=0, reasoning_effort="none")
check(off.usage.prompt_tokens < len(f["prompt_ids"]) and getattr(off.choices[0].message, "reasoning_content", None) is None,
      "openai: reasoning_effort='none' turns thinking off")
sys.exit(1 if failed else 0)
