#!/usr/bin/env bash
# llama.cpp's libmtmd (llama-cpp-python's mtmd_cpp bindings, built by
# scripts/lib.sh's llama_cpp_venv) against gemma-rs on mmproj files:
# the tiny vision fixture's text model and tower written by `gemma quantize`
# (mmproj f16, as llama.cpp's converter writes it), and the tower as
# llama.cpp's own converter writes it; both engines encode the same
# 42×42 image (no resize, so only the tower is compared) and their soft
# tokens must agree within f16 rounding. llama.cpp must also load the
# files we write. Run by scripts/test.sh.
#   scripts/check-mmproj-llama-cpp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
VENV=$(llama_cpp_venv)
cargo build --release -q -p gemma-cli
cargo build --release -q -p gemma --example image_embeddings
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/release/gemma quantize -m testdata/tiny-gemma3-vision -t f32 -o "$tmp/tiny.gguf" 2>&1 | sed 's/^/  /'
img=testdata/tiny-gemma3-vision/images/gray_42x42.png
for mm in "$tmp/mmproj-tiny.gguf" testdata/tiny-gemma3-vision/mmproj-llama-cpp.gguf; do
  target/release/examples/image_embeddings "$tmp/tiny.gguf" "$mm" "$img" "$tmp/ours" >/dev/null
  r=$("$VENV/bin/python" tools/reference/mtmd_embeddings.py "$tmp/tiny.gguf" "$mm" "$tmp/ours" 2>"$tmp/mtmd.log") || { cat "$tmp/mtmd.log" >&2; echo "FAILED: libmtmd on $mm" >&2; exit 1; }
  echo "$(basename "$mm"): $r"
  python3 - "$r" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
# Both engines round the weights and activations through f16: allow 1% of the largest value.
ok = r["tokens"] == 9 and r["max_abs_diff"] <= 0.01 * r["max_abs"]
print("  soft tokens agree with llama.cpp's within f16 rounding" if ok else "FAILED: llama.cpp's image embeddings differ from ours")
sys.exit(0 if ok else 1)
PY
done
# Gemma 4 ("gemma4v"): the tiny Gemma 4 fixture's text model and tower as
# `gemma quantize` writes them; a 120x84 image is exactly the 70-token
# budget, so neither engine resizes it (llama.cpp keeps sizes that are
# multiples of patch x pooling within its 70-1120 token range). Our files
# set clip.use_gelu, so llama.cpp runs the tanh-GELU the model has.
target/release/gemma quantize -m testdata/tiny-gemma4-vision -t f32 -o "$tmp/g4.gguf" 2>&1 | sed 's/^/  /'
IMAGE_TOKENS=70 target/release/examples/image_embeddings "$tmp/g4.gguf" "$tmp/mmproj-g4.gguf" testdata/tiny-gemma4-vision/images/exact_120x84.png "$tmp/ours4" >/dev/null
r=$("$VENV/bin/python" tools/reference/mtmd_embeddings.py "$tmp/g4.gguf" "$tmp/mmproj-g4.gguf" "$tmp/ours4" 2>"$tmp/mtmd.log") || { cat "$tmp/mtmd.log" >&2; echo "FAILED: libmtmd on the Gemma 4 mmproj" >&2; exit 1; }
echo "mmproj-g4.gguf (Gemma 4): $r"
python3 - "$r" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
ok = r["tokens"] == 70 and r["max_abs_diff"] <= 0.01 * r["max_abs"]
print("  soft tokens agree with llama.cpp's within f16 rounding" if ok else "FAILED: llama.cpp's Gemma 4 image embeddings differ from ours")
sys.exit(0 if ok else 1)
PY
