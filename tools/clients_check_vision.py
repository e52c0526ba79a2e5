#!/usr/bin/env python3
"""Drive a running `gemma serve` of a model that takes images with the
official clients: `openai` (an image_url data URL in a chat message,
streamed and not; models.list says the model takes images) and
`huggingface_hub`'s InferenceClient (TGI text_generation with a markdown
image). The greedy answer must equal WANT (what `gemma generate --chat
--image` answers) and the prompt must have PROMPT_TOKENS tokens (what
transformers' processor makes of it). FAMILY (gemma3, the default, or
gemma4) picks the turn markup of the TGI prompt.
Usage: clients_check_vision.py BASE_URL API_KEY IMAGE WANT PROMPT_TOKENS [FAMILY]"""
import base64
import mimetypes
import sys

import openai
from huggingface_hub import InferenceClient
from openai import OpenAI

base, key, image, want, prompt_tokens = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
family = sys.argv[6] if len(sys.argv) > 6 else "gemma3"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1
    print(f"ok  {what}")


mime = mimetypes.guess_type(image)[0] or "image/png"
url = f"data:{mime};base64,{base64.b64encode(open(image, 'rb').read()).decode()}"
oa = OpenAI(base_url=f"{base}/v1", api_key=key)
card = oa.models.list().data[0]
check("image" in (getattr(card, "input_modalities", None) or []), f"openai: models.list says {card.id} takes images")
msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Describe this image."}]}]
r = oa.chat.completions.create(model=card.id, messages=msgs, max_tokens=8, temperature=0)
text = r.choices[0].message.content
check(text == want, f"openai: chat with an image_url -> {text!r} (gemma generate --image: {want!r})")
check(r.usage.prompt_tokens == prompt_tokens, f"openai: {r.usage.prompt_tokens} prompt tokens (the processor: {prompt_tokens})")
chunks = list(oa.chat.completions.create(model=card.id, messages=msgs, max_tokens=8, temperature=0, stream=True))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(streamed == text, "openai: streamed answer equals the non-streamed one")
try:
    oa.chat.completions.create(model=card.id, max_tokens=2, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}, {"type": "text", "text": "Hi"}]}])
    check(False, "openai: a corrupt image is refused")
except openai.BadRequestError as e:
    check("image 0" in str(e), f"openai: a corrupt image is a 400 naming it ({str(e)[:90]}...)")

hf = InferenceClient(base_url=base, api_key=key)
if family == "gemma4":
    inputs = f"<|turn>user\n![]({url})Describe this image.<turn|>\n<|turn>model\n"
else:
    inputs = f"<start_of_turn>user\n![]({url})Describe this image.<end_of_turn>\n<start_of_turn>model\n"
t = hf.text_generation(inputs, max_new_tokens=8)
check(t == want, f"huggingface_hub: text_generation with a markdown image -> {t!r}")
print(f"vision clients: {checks} checks passed")
