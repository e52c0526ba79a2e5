#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every parser: the GGUF
# reader, safetensors files and shard indexes, config.json,
# tokenizer_config.json, generation_config.json, the chat-template renderer
# and the PEFT adapter loader, each for SECONDS (default 60), seeded from
# testdata/. Prints executions and coverage per target; a crash stops with
# the input under fuzz/artifacts/TARGET/ — turn it into a regression test.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
TARGETS=(gguf safetensors safetensors_index flax_msgpack config tokenizer_config generation_config chat_template peft_adapter)
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
  exit 2
fi
seed() { # target, files...
  local d="fuzz/corpus/$1"; shift
  mkdir -p "$d"
  for f in "$@"; do
    if [ -f "$f" ]; then cp "$f" "$d/seed-$(basename "$(dirname "$f")")-$(basename "$f")"; fi
  done
}
mkdir -p fuzz/corpus/gguf
[ -f fuzz/corpus/gguf/seed-tiny-q8_0.gguf ] || cargo run --release -q -p gemma-cli -- quantize -m testdata/tiny-gemma3 --type q8_0 -o fuzz/corpus/gguf/seed-tiny-q8_0.gguf >/dev/null 2>&1
seed safetensors testdata/tiny-gemma3-lora/adapter_model.safetensors testdata/tiny-embeddinggemma/2_Dense/model.safetensors
seed safetensors_index testdata/tiny-gemma3-mm-sharded/model.safetensors.index.json
seed flax_msgpack testdata/tiny-gemma-flax/flax_model.msgpack testdata/tiny-gemma-flax-sharded/flax_model-00001-of-00007.msgpack
seed config testdata/tiny-gemma*/config.json testdata/tiny-embeddinggemma/config.json
seed tokenizer_config testdata/tiny-gemma3/tokenizer_config.json testdata/tiny-functiongemma/tokenizer_config.json testdata/tiny-embeddinggemma/tokenizer_config.json
seed generation_config testdata/tiny-gemma*/generation_config.json
seed peft_adapter testdata/tiny-gemma3-lora/adapter_config.json
mkdir -p fuzz/corpus/chat_template
python3 - <<'PY'
import json
cfg = json.load(open("testdata/tiny-functiongemma/tokenizer_config.json"))
open("fuzz/corpus/chat_template/seed-functiongemma", "w").write(cfg["chat_template"].replace("\n", " ") + "\nWhat is the weather?")
cfg = json.load(open("testdata/tiny-gemma3/tokenizer_config.json"))
open("fuzz/corpus/chat_template/seed-gemma", "w").write(cfg["chat_template"].replace("\n", " ") + "\nHello")
PY
cargo +nightly fuzz build -O >/dev/null
printf '| target | executions | seconds | coverage (edges) | features |\n|---|---:|---:|---:|---:|\n'
for t in "${TARGETS[@]}"; do
  log="$(mktemp)"
  if ! cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" -max_len=1048576 -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -oE 'Done [0-9]+ runs in [0-9]+' "$log" | tail -1 | awk '{print $2, $5}')
  stats=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' | awk '{print $2, $4}')
  read -r n s <<<"$runs"; read -r cov ft <<<"$stats"
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$n" "$s" "$cov" "$ft"
  rm -f "$log"
done
