"""A chat that grows turn by turn against a running `gemma serve`: prints
one JSON line per turn with the prompt size, the tokens reused from the
prefix cache (usage.prompt_tokens_details.cached_tokens) and the time to
the first streamed token. Standard library only.

    python tools/bench_prefix_reuse.py http://127.0.0.1:PORT [TURNS=10] [WORDS=340]
"""

import json
import sys
import time
import urllib.request

BASE = sys.argv[1].rstrip("/")
TURNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
WORDS = int(sys.argv[3]) if len(sys.argv) > 3 else 340
VOCAB = ("river mountain quiet engine copper lantern orchard signal harbor velvet meadow circuit thunder saffron "
         "glacier pepper compass marble falcon ember willow canyon basil prism anchor cedar monsoon tablet").split()


def user_turn(k):
    # Varied, deterministic text: every turn is new content (nothing to reuse but the history).
    words = [VOCAB[(k * 7 + i * i * 3 + i) % len(VOCAB)] for i in range(WORDS)]
    return f"Note {k}: " + " ".join(words) + ". Summarize the note in one line."


def turn(messages):
    body = {"messages": messages, "max_tokens": 32, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(BASE + "/v1/chat/completions", json.dumps(body).encode(), {"content-type": "application/json"})
    t0 = time.perf_counter()
    ttft, text, usage = None, "", None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk.get("choices", []):
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text += c.get("delta", {}).get("content") or ""
    return ttft, text, usage


messages = [{"role": "system", "content": "You are a concise assistant that summarizes notes."}]
for k in range(TURNS):
    messages.append({"role": "user", "content": user_turn(k)})
    ttft, text, usage = turn(messages)
    messages.append({"role": "assistant", "content": text})
    print(json.dumps({"turn": k + 1, "prompt_tokens": usage["prompt_tokens"], "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"],
                      "ttft_s": round(ttft, 3), "answer": text}), flush=True)
