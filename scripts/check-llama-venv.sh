#!/usr/bin/env bash
# The choices of llama_cpp_venv (scripts/lib.sh), with the wheel build and
# the smoke run stubbed (seconds, no compiler): on a CPU with AMX whose AMX
# build crashes, the venv ends up built without AMX and says so, and the
# failed AMX build is not tried again; a venv carried to another CPU type is
# rebuilt; a smoke failure without AMX fails, naming its cause. CI runs it
# after the real llama_cpp_venv (whose wheel the stubs install).
#   scripts/check-llama-venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
WHEEL=$(ls "$(gemma_cache)"/llama-wheels/*/llama_cpp_python-*.whl | head -1)
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
export LLAMA_VENV="$T/venv"
# Stubs: a "build" is a copy of this machine's wheel in a folder per argument
# set; the smoke run "crashes" for the argument sets matching $CRASH.
llama_cpp_wheel() {
  local d; d="$T/wheels/$(echo "$1" | sha256sum | cut -c1-8)"
  mkdir -p "$d"; echo "$1" >> "$T/builds"
  [ -f "$d/$(basename "$WHEEL")" ] || cp "$WHEEL" "$d/"
  echo "$d/$(basename "$WHEEL")"
}
llama_cpp_smoke() {
  if [[ "$3" == *$CRASH* ]]; then echo "llama.cpp crashed with signal 11 (SEGV) in the smoke evaluation (8 then 56 tokens of $2)" >&2; return 1; fi
}
fail() { echo "FAILED: $*" >&2; exit 1; }
stamp() { sed -n 's/^cmake: //p' "$LLAMA_VENV/gemma-rs-llama.txt"; }

# 1. A CPU with AMX whose AMX build crashes: two builds, the venv without AMX.
export GEMMA_CPU_FLAGS="sse4_2 avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16"
CRASH="AMX_INT8=ON"
llama_cpp_venv > /dev/null 2> "$T/log"
grep -q "the build with AMX failed its smoke run (llama.cpp crashed with signal 11" "$T/log" || fail "no AMX fallback message: $(cat "$T/log")"
[ "$(wc -l < "$T/builds")" = 2 ] || fail "expected 2 builds, got $(wc -l < "$T/builds")"
[[ "$(stamp)" == *"-DGGML_AVX512_VNNI=ON"*"-DGGML_AMX_INT8=OFF"* ]] || fail "venv not recorded as AVX-512 VNNI without AMX: $(stamp)"
# ... and again on the same CPU type: nothing is built or re-run.
llama_cpp_venv > /dev/null 2> "$T/log"
[ "$(wc -l < "$T/builds")" = 2 ] && [ ! -s "$T/log" ] || fail "the venv was rebuilt on the same CPU: $(cat "$T/log")"
# ... and rebuilding it (venv gone) skips the AMX build known to crash.
rm -rf "$LLAMA_VENV"
llama_cpp_venv > /dev/null 2> "$T/log"
grep -q "the build with AMX failed" "$T/log" && [[ "$(stamp)" == *"-DGGML_AMX_INT8=OFF"* ]] || fail "AMX not skipped: $(cat "$T/log")"

# 2. The venv carried to an AVX2-only CPU: rebuilt for it.
export GEMMA_CPU_FLAGS="sse4_2 avx avx2 fma f16c bmi2"
llama_cpp_venv > /dev/null 2> "$T/log"
grep -q "was built for another CPU type" "$T/log" || fail "no rebuild for the new CPU: $(cat "$T/log")"
[[ "$(stamp)" == *"-DGGML_AVX2=ON"*"-DGGML_AVX512=OFF"* ]] || fail "not rebuilt for AVX2: $(stamp)"

# 3. A CPU with AMX whose AMX build works: the venv keeps AMX.
export GEMMA_CPU_FLAGS="sse4_2 avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni amx_tile amx_int8"
CRASH="no crash"
llama_cpp_venv > /dev/null 2> "$T/log"
[[ "$(stamp)" == *"-DGGML_AMX_INT8=ON"* ]] || fail "a working AMX build was not kept: $(stamp)"

# 4. No AMX and the smoke run fails: an error naming the cause, no venv.
export GEMMA_CPU_FLAGS="sse4_2 avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw"
CRASH="AVX512=ON"
if llama_cpp_venv > /dev/null 2> "$T/log"; then fail "a crashing build was accepted"; fi
grep -q "failed its smoke run: llama.cpp crashed with signal 11" "$T/log" || fail "the cause is not named: $(cat "$T/log")"
[ ! -e "$LLAMA_VENV" ] || fail "the failed venv was left behind"
echo "llama_cpp_venv choices OK (AMX fallback, no retry, CPU change, smoke failure)"
