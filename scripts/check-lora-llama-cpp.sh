#!/usr/bin/env bash
# llama.cpp loads the GGUF LoRA that `gemma export-lora` writes and its
# perplexity moves as ours does: mean NLL of the demo's held-out chat text
# (prompt + answer + <end_of_turn>, one after another) without and with the
# adapter, by llama.cpp (llama-cpp-python) and by `gemma perplexity`, same
# windows. Fails unless both agree within 1% (base) and 2% (adapter).
#   scripts/check-lora-llama-cpp.sh MODEL ADAPTER_DIR HELDOUT.jsonl
# llama.cpp comes from llama_cpp_venv (scripts/lib.sh: llama-cpp-python built
# for this CPU once, ~6-12 minutes on 2 cores, smoke-tested).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="$1"; ADAPTER="$2"; HELDOUT="$3"; CTX=256
VENV=$(llama_cpp_venv)
echo "llama.cpp: $(llama_cpp_build_info "$VENV")"
cargo build --release -q -p gemma-cli
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
python3 - "$HELDOUT" "$WORK/text.txt" <<'PY'
import json, sys
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for line in open(sys.argv[1], encoding="utf-8"):
        d = json.loads(line)
        f.write(d["prompt"] + d["target"] + "<end_of_turn>\n")
PY
target/release/gemma export-lora --lora "$ADAPTER" --out "$WORK/adapter.gguf" >/dev/null
"$VENV/bin/python" tools/reference/check_lora_with_llama_cpp.py "$MODEL" "$WORK/adapter.gguf" "$WORK/text.txt" "$CTX" "$WORK/llama.json" >/dev/null 2>"$WORK/llama.err" ||
  { tail -20 "$WORK/llama.err" >&2; echo "FAILED: llama.cpp did not score the text with our GGUF LoRA" >&2; exit 1; }
target/release/gemma perplexity -m "$MODEL" --file "$WORK/text.txt" --ctx "$CTX" --json > "$WORK/base.json" 2>/dev/null
target/release/gemma perplexity -m "$MODEL" --lora "$ADAPTER" --file "$WORK/text.txt" --ctx "$CTX" --json > "$WORK/lora.json" 2>/dev/null
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
ll = json.load(open(f"{w}/llama.json"))
ob, ol = json.load(open(f"{w}/base.json")), json.load(open(f"{w}/lora.json"))
print(f"mean NLL over {ll['tokens']} tokens: llama.cpp {ll['nll_base']:.4f} -> {ll['nll_lora']:.4f} with our GGUF LoRA; "
      f"gemma {ob['nll']:.4f} -> {ol['nll']:.4f} with the PEFT adapter")
ok = ll["tokens"] == ob["tokens"] == ol["tokens"] \
    and abs(ll["nll_base"] - ob["nll"]) <= 0.01 * ob["nll"] \
    and abs(ll["nll_lora"] - ol["nll"]) <= 0.02 * ol["nll"] \
    and abs(ob["nll"] - ol["nll"]) > 0.05 * ob["nll"]
print("llama.cpp LoRA check:", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
