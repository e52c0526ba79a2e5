#!/usr/bin/env python3
"""Tiny Gemma 4 MTP assistants (multi-token-prediction drafters) for
tiny-gemma4, with draft goldens from transformers 5.25.

    python tools/reference/make_tiny_gemma4_assistant.py testdata

- testdata/tiny-gemma4-assistant: a `Gemma4AssistantForCausalLM` (2 layers,
  sliding head_dim 16 and full head_dim 32 like the target's, hidden 32, every
  layer reading the target's keys and values) with the plain tied head.
- testdata/tiny-gemma4-assistant-ordered: the same with
  `use_ordered_embeddings` (10 centroids of 42 tokens, top 3, a random token
  ordering): logits only for the tokens of the top centroids.

goldens.safetensors in each: for a 12-token prompt (longer than the window 5),
the target's greedy next token t0 and four draft steps exactly as
transformers' `SinglePositionMultiTokenCandidateGenerator` runs its first
round after the prompt: input [target embedding(last token) ; target's last
final-normed hidden state], constant position = the prompt length, the
target's keys and values of the prompt (its `shared_kv_states`), greedy
drafts. `logits` [4, vocab], `hidden` [4, 48] (post-projected), `tokens` [5]
(t0 and the four drafts), `prompt` [12].
"""
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import Gemma4AssistantConfig, Gemma4AssistantForCausalLM, Gemma4ForCausalLM, Gemma4TextConfig

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata"
STEPS = 4
PROMPT = [2, 17, 45, 99, 3, 250, 7, 64, 128, 301, 11, 5]


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def make(name, target, ordered, seed):
    t = target.config
    text = Gemma4TextConfig(
        vocab_size=t.vocab_size, vocab_size_per_layer_input=0, hidden_size=32, hidden_size_per_layer_input=0,
        intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        layer_types=["sliding_attention", "full_attention"], per_layer_config={"1": {"head_dim": 32}},
        sliding_window=t.sliding_window, rope_parameters=t.rope_parameters, max_position_embeddings=t.max_position_embeddings,
        final_logit_softcapping=t.final_logit_softcapping, num_kv_shared_layers=2, bos_token_id=2, eos_token_id=t.eos_token_id,
        pad_token_id=0, attn_implementation="eager")
    cfg = Gemma4AssistantConfig(text_config=text, backbone_hidden_size=t.hidden_size, use_ordered_embeddings=ordered,
                                num_centroids=10, centroid_intermediate_top_k=3)
    cfg.architectures = ["Gemma4AssistantForCausalLM"]
    torch.manual_seed(0)
    a = Gemma4AssistantForCausalLM(cfg)
    randomize(a, seed)
    if ordered:
        g = torch.Generator().manual_seed(seed + 1)
        a.masked_embedding.token_ordering.copy_(torch.randperm(t.vocab_size, generator=g))
    a = a.float().eval()
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    a.save_pretrained(folder, safe_serialization=True)

    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        out = target(input_ids=ids, use_cache=False, output_hidden_states=True, return_shared_kv_states=True)
        t0 = int(out.logits[0, -1].argmax())
        hidden = out.hidden_states[-1][:, -1:]
        kv = {k: (v[0], v[1]) for k, v in out.shared_kv_states.items()}
        embed = target.get_input_embeddings()
        token = torch.tensor([[t0]])
        pos = torch.tensor([[len(PROMPT)]])
        mask = torch.ones(1, len(PROMPT) + 1, dtype=torch.long)
        logits, hiddens, tokens = [], [], [t0]
        for _ in range(STEPS):
            o = a(inputs_embeds=torch.cat([embed(token), hidden], dim=-1), attention_mask=mask, position_ids=pos,
                  shared_kv_states=kv, use_cache=False)
            token = o.logits.argmax(dim=-1)
            hidden = o.last_hidden_state
            logits.append(o.logits[0, 0])
            hiddens.append(hidden[0, 0])
            tokens.append(int(token))
    save_file({"logits": torch.stack(logits).contiguous(), "hidden": torch.stack(hiddens).contiguous(),
               "tokens": torch.tensor(tokens, dtype=torch.int64), "prompt": torch.tensor(PROMPT, dtype=torch.int64)},
              os.path.join(folder, "goldens.safetensors"))
    print("wrote", folder, "tokens", tokens)


def main():
    target = Gemma4ForCausalLM.from_pretrained(os.path.join(OUT, "tiny-gemma4"), dtype=torch.float32,
                                               attn_implementation="eager").eval()
    make("tiny-gemma4-assistant", target, False, 11)
    make("tiny-gemma4-assistant-ordered", target, True, 12)


if __name__ == "__main__":
    main()
