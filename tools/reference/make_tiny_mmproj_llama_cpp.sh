#!/usr/bin/env bash
# testdata/tiny-gemma3-vision/mmproj-llama-cpp.gguf: the tiny vision
# fixture's tower as llama.cpp's own converter writes it
# (convert_hf_to_gguf.py --mmproj, from the llama-cpp-python sdist of
# scripts/lib.sh's version), for the loader test in
# crates/gemma/tests/vision_mmproj.rs. The converter reads Hub checkpoint
# names (vision_tower.vision_model.*) and a preprocessor_config.json, so a
# copy of the fixture gets both first.
#   tools/reference/make_tiny_mmproj_llama_cpp.sh [PYTHON_WITH_TORCH]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
PY="${1:-$(gemma_cache)/venv-torch/bin/python}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
url=$(curl -sS -H "Accept: application/vnd.pypi.simple.v1+json" https://pypi.org/simple/llama-cpp-python/ |
  python3 -c "import json,sys; v='$LLAMA_CPP_PYTHON_VERSION'; print([f['url'] for f in json.load(sys.stdin)['files'] if f['filename']==f'llama_cpp_python-{v}.tar.gz'][0])")
curl -sSL "$url" | tar xz -C "$work"
src="$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
hub="$work/tiny-hub"
mkdir "$hub"
cp testdata/tiny-gemma3-vision/{config.json,tokenizer.json,tokenizer_config.json,generation_config.json} "$hub/"
"$PY" - "$hub" <<'PY'
import json, sys
from safetensors.numpy import load_file, save_file
hub = sys.argv[1]
t = load_file("testdata/tiny-gemma3-vision/model.safetensors")
save_file({("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v for k, v in t.items()},
          f"{hub}/model.safetensors")
json.dump({"image_processor_type": "Gemma3ImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "image_seq_length": 9,
           "size": {"height": 42, "width": 42}, "resample": 2, "rescale_factor": 1 / 255, "do_normalize": True, "do_rescale": True,
           "do_resize": True, "processor_class": "Gemma3Processor"}, open(f"{hub}/preprocessor_config.json", "w"))
PY
PYTHONPATH="$src/gguf-py" "$PY" "$src/convert_hf_to_gguf.py" "$hub" --mmproj --outtype f32 --outfile testdata/tiny-gemma3-vision/mmproj-llama-cpp.gguf
ls -la testdata/tiny-gemma3-vision/mmproj-llama-cpp.gguf
