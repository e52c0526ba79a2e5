"""Check `gemma serve`'s answers against its own GET /openapi.json where
schemathesis cannot look: the JSON inside each server-sent event (against
`CompletionChunk` / `StreamResponse`), and request combinations random
generation rarely reaches (logprobs with alternatives, echo scoring, TGI
details with prefill and top tokens, tool definitions, several choices).

    python tools/openapi_stream_check.py http://127.0.0.1:PORT

Needs `jsonschema_rs` (installed with schemathesis). Exits 1 on any mismatch.
"""

import json
import sys
import urllib.request

import jsonschema_rs

BASE = sys.argv[1].rstrip("/")
DOC = json.load(urllib.request.urlopen(BASE + "/openapi.json", timeout=30))
failures = []


def validator(name):
    # The components travel with the schema so `#/components/...` resolves.
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": DOC["components"]})


def post(path, body):
    req = urllib.request.Request(BASE + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.headers.get("content-type", ""), r.read().decode()


def response_schema(path, content_type):
    media = DOC["paths"][path]["post"]["responses"]["200"]["content"][content_type]
    return jsonschema_rs.validator_for(dict(media["schema"], components=DOC["components"]))


def check(what, v, value):
    errors = [f"{e.instance_path}: {e.message}" for e in v.iter_errors(value)]
    if errors:
        failures.append(what)
        print(f"FAIL {what}: {errors[:3]}\n  value: {json.dumps(value)[:400]}")
    else:
        print(f"ok   {what}")


def events(text):
    for line in text.splitlines():
        if line.startswith("data:"):
            yield line[5:].strip()


chunk, tgi_event = validator("CompletionChunk"), validator("StreamResponse")
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
cases = [
    ("/v1/chat/completions", {"messages": msgs, "max_tokens": 6, "logprobs": True, "top_logprobs": 2, "n": 2, "seed": 1, "temperature": 0.8}),
    ("/v1/chat/completions", {"messages": msgs, "max_tokens": 6, "tools": tools, "tool_choice": "auto"}),
    ("/v1/chat/completions", {"messages": msgs, "max_tokens": 12, "tools": tools, "tool_choice": "required"}),
    ("/v1/chat/completions", {"messages": msgs, "max_tokens": 12, "response_format": {"type": "json_object"}}),
    ("/v1/completions", {"prompt": ["The sky is", "Two plus two"], "max_tokens": 4, "logprobs": 3}),
    ("/v1/completions", {"prompt": "The sky is", "max_tokens": 3, "echo": True, "logprobs": 2}),
    ("/v1/completions", {"prompt": "The sky is", "max_tokens": 0, "echo": True, "logprobs": 1}),
    ("/generate", {"inputs": "The sky is", "parameters": {"max_new_tokens": 4, "details": True, "decoder_input_details": True, "top_n_tokens": 2}}),
    ("/", {"inputs": "The sky is", "parameters": {"max_new_tokens": 4, "details": True, "do_sample": True, "seed": 3}}),
]
for path, body in cases:
    ctype, text = post(path, body)
    check(f"{path} {json.dumps(body)[:70]}", response_schema(path, "application/json"), json.loads(text))
stream_cases = [
    ("/v1/chat/completions", chunk, {"messages": msgs, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2, "n": 2}),
    ("/v1/chat/completions", chunk, {"messages": msgs, "max_tokens": 12, "stream": True, "tools": tools, "tool_choice": "required"}),
    ("/v1/completions", chunk, {"prompt": "The sky is", "max_tokens": 4, "stream": True, "logprobs": 2}),
    ("/generate_stream", tgi_event, {"inputs": "The sky is", "parameters": {"max_new_tokens": 4, "top_n_tokens": 2}}),
    ("/", tgi_event, {"inputs": "The sky is", "stream": True, "parameters": {"max_new_tokens": 4}}),
]
for path, v, body in stream_cases:
    ctype, text = post(path, body)
    if not ctype.startswith("text/event-stream"):
        failures.append(path)
        print(f"FAIL {path}: content-type {ctype}")
        continue
    datas = [d for d in events(text) if d != "[DONE]"]
    for i, d in enumerate(datas):
        check(f"{path} stream event {i + 1}/{len(datas)}", v, json.loads(d))
print(f"{len(failures)} mismatches")
sys.exit(1 if failures else 0)
