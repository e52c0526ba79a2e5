#!/usr/bin/env python3
"""Drive a running `gemma serve` with the official clients from PyPI:
`openai` (chat and completions, streaming and not, models, errors,
Predicted Outputs) and
`huggingface_hub`'s InferenceClient (text_generation, streaming and not,
details). Greedy requests must give the same text streamed and not.
Usage: clients_check.py BASE_URL [API_KEY]"""
import json
import re
import sys

import huggingface_hub
import openai
from huggingface_hub import InferenceClient
from openai import OpenAI
from pydantic import BaseModel, ConfigDict, Field

base, key = sys.argv[1].rstrip("/"), (sys.argv[2] if len(sys.argv) > 2 else "unused")
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1
    print(f"ok  {what}")


print(f"openai {openai.__version__}, huggingface_hub {huggingface_hub.__version__}, server {base}")
oa = OpenAI(base_url=f"{base}/v1", api_key=key)
models = oa.models.list()
model = models.data[0].id
check(len(models.data) == 1 and model, f"openai: models.list -> {model}")

msgs = [{"role": "user", "content": "Complete: The capital of France is"}]
r = oa.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0)
text = r.choices[0].message.content
check(r.choices[0].message.role == "assistant" and isinstance(text, str) and len(text) > 0, f"openai: chat.completions -> {text!r}")
check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens and r.usage.completion_tokens > 0, "openai: usage adds up")
check(r.choices[0].finish_reason in ("stop", "length"), f"openai: finish_reason {r.choices[0].finish_reason}")

chunks = list(oa.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0, stream=True,
                                         stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(streamed == text, "openai: streamed chat equals the non-streamed answer")
check(chunks[0].choices[0].delta.role == "assistant", "openai: role in the first chunk")
check(len({c.id for c in chunks}) == 1, "openai: one id across chunks")
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens, "openai: usage chunk (include_usage)")

c = oa.completions.create(model=model, prompt="English: cat\nFrench: chat\nEnglish: house\nFrench:", max_tokens=4, temperature=0, logprobs=2)
ctext = c.choices[0].text
check(len(ctext) > 0 and c.choices[0].logprobs is not None, f"openai: completions -> {ctext!r} with logprobs")
cs = "".join(x.choices[0].text for x in oa.completions.create(model=model, prompt="English: cat\nFrench: chat\nEnglish: house\nFrench:",
                                                                   max_tokens=4, temperature=0, stream=True) if x.choices)
check(cs == ctext, "openai: streamed completion equals the non-streamed one")
# Prompt scoring as lm-eval's local-completions sends it: token ids without BOS, echo, max_tokens 0.
ids = [9259, 1902, 563]
sc = oa.completions.create(model=model, prompt=[ids], max_tokens=0, echo=True, logprobs=1, temperature=0)
lp = sc.choices[0].logprobs
check(len(lp.token_logprobs) == len(ids) and all(x is not None and x <= 0 for x in lp.token_logprobs),
      f"openai: echo scores exactly the sent tokens -> {lp.token_logprobs}")
check(all(t <= max(top.values()) + 1e-9 for t, top in zip(lp.token_logprobs, lp.top_logprobs)), "openai: echo top_logprobs hold the argmax")
r2 = oa.chat.completions.create(model=model, messages=msgs, max_tokens=4, n=2, temperature=0.9, seed=3)
check([c.index for c in r2.choices] == [0, 1], "openai: n=2 -> two choices")
try:
    oa.chat.completions.create(model=model, messages=msgs, max_tokens=4, n=99)
    check(False, "openai: n=99 must be refused")
except openai.BadRequestError as e:
    check(e.status_code == 400, "openai: n=99 -> BadRequestError 400")


# Predicted Outputs (speculative decoding): the same answer, the prediction's
# tokens counted in usage.completion_tokens_details as OpenAI reports them.
code = "def area(r):\n    return 3.14159 * r * r\n\ndef perimeter(r):\n    return 2 * 3.14159 * r\n"
pmsgs = [{"role": "user", "content": "Repeat this code exactly:\n" + code}]
plain = oa.chat.completions.create(model=model, messages=pmsgs, max_tokens=48, temperature=0)
pred = oa.chat.completions.create(model=model, messages=pmsgs, max_tokens=48, temperature=0,
                                  prediction={"type": "content", "content": plain.choices[0].message.content})
det = pred.usage.completion_tokens_details
check(pred.choices[0].message.content == plain.choices[0].message.content and det is not None and det.accepted_prediction_tokens > 0,
      f"openai: prediction= leaves the answer unchanged, {det.accepted_prediction_tokens if det else None} predicted tokens accepted")

# Structured output: the base 270M model, constrained, returns a valid instance.
class City(BaseModel):
    # A bounded integer: the 270M base model otherwise writes digits until max_tokens.
    model_config = ConfigDict(extra="forbid")
    name: str
    country: str
    population: int = Field(ge=0, le=100_000_000)


p = oa.chat.completions.parse(model=model, messages=[{"role": "user", "content": "Describe Paris as JSON."}], response_format=City,
                              max_tokens=80, temperature=0)
city = p.choices[0].message.parsed
check(isinstance(city, City) and p.choices[0].finish_reason == "stop", f"openai: chat.completions.parse(response_format=City) -> {city!r}")
jo = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "A JSON object about cats."}], max_tokens=60, temperature=0,
                                response_format={"type": "json_object"})
if jo.choices[0].finish_reason == "stop":
    check(isinstance(json.loads(jo.choices[0].message.content), dict), "openai: response_format json_object -> a JSON object")
else:
    check(jo.choices[0].message.content.lstrip().startswith("{"), "openai: response_format json_object (cut at max_tokens) starts an object")
try:
    oa.chat.completions.create(model=model, messages=msgs, response_format={"type": "json_schema", "json_schema": {
        "name": "loose", "strict": True, "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})
    check(False, "openai: a non-strict schema with strict=true must be refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "additionalProperties" in str(e), "openai: strict schema without additionalProperties:false -> 400")

# Tool calling: `required` gives a call whose arguments fit the schema, streamed as OpenAI streams it.
weather = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"],
                           "additionalProperties": False}}}]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
tc = oa.chat.completions.create(model=model, messages=ask, tools=weather, tool_choice="required", max_tokens=60, temperature=0)
call = tc.choices[0].message.tool_calls[0]
args = json.loads(call.function.arguments)
check(call.function.name == "get_weather" and isinstance(args.get("city"), str) and tc.choices[0].finish_reason == "tool_calls",
      f"openai: tools, tool_choice=required -> {call.function.name}({call.function.arguments})")
parts = list(oa.chat.completions.create(model=model, messages=ask, tools=weather, tool_choice="required", max_tokens=60, temperature=0, stream=True))
deltas = [d for p in parts if p.choices for d in (p.choices[0].delta.tool_calls or [])]
streamed_args = "".join(d.function.arguments or "" for d in deltas)
check(deltas and deltas[0].function.name == "get_weather" and streamed_args == call.function.arguments,
      f"openai: streamed tool call (name first, then {len(deltas) - 1} argument fragments) equals the non-streamed one")
follow = ask + [{"role": "assistant", "tool_calls": [{"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
                {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
fr = oa.chat.completions.create(model=model, messages=follow, tools=weather, max_tokens=30, temperature=0)
check(fr.choices[0].finish_reason in ("stop", "length", "tool_calls"), f"openai: tool result rendered back -> {fr.choices[0].message.content!r}")

# Embeddings: the client asks for base64 by default and decodes it.
em = oa.embeddings.create(model=model, input=["The capital of France is Paris.", "A cat sat on the mat."])
vecs = [d.embedding for d in em.data]
norms = [sum(x * x for x in v) ** 0.5 for v in vecs]
check(len(vecs) == 2 and all(abs(n - 1) < 1e-4 for n in norms) and em.usage.prompt_tokens > 0,
      f"openai: embeddings.create -> 2 vectors of {len(vecs[0])} (norms {norms[0]:.4f}, {norms[1]:.4f})")
em8 = oa.embeddings.create(model=model, input="The capital of France is Paris.", dimensions=8, encoding_format="float")
check(len(em8.data[0].embedding) == 8 and abs(sum(x * x for x in em8.data[0].embedding) - 1) < 1e-4, "openai: embeddings dimensions=8 renormalized")

hf = InferenceClient(base_url=base, api_key=key)
g = hf.text_generation("Phone number:", max_new_tokens=16, grammar={"type": "regex", "value": "[0-9]{3}-[0-9]{4}"})
check(re.fullmatch(r"[0-9]{3}-[0-9]{4}", g) is not None, f"huggingface_hub: text_generation(grammar=regex) -> {g!r}")
gj = hf.text_generation("Paris as JSON:", max_new_tokens=80, grammar={"type": "json", "value": City.model_json_schema()})
check(isinstance(City.model_validate_json(gj), City), f"huggingface_hub: text_generation(grammar=json schema) -> {gj!r}")
out = hf.text_generation("The capital of France is", max_new_tokens=8)
check(isinstance(out, str) and len(out) > 0, f"huggingface_hub: text_generation -> {out!r}")
d = hf.text_generation("The capital of France is", max_new_tokens=8, details=True)
check(d.generated_text == out and d.details.generated_tokens == len(d.details.tokens), "huggingface_hub: details (tokens, finish_reason)")
parts = list(hf.text_generation("The capital of France is", max_new_tokens=8, stream=True))
check("".join(parts) == out, "huggingface_hub: streamed text_generation equals the non-streamed one")
events = list(hf.text_generation("The capital of France is", max_new_tokens=8, stream=True, details=True))
check(events[-1].generated_text == out and events[-1].details is not None, "huggingface_hub: last stream event carries generated_text and details")
chat = hf.chat_completion(messages=msgs, max_tokens=12, temperature=0)
check(chat.choices[0].message.content == text, "huggingface_hub: chat_completion (OpenAI route) equals openai's answer")
print(f"all {checks} client checks passed")
