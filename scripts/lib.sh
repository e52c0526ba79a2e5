# Helpers the scripts source (`. scripts/lib.sh`).

# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for_health URL [TRIES=150] [PID]: poll URL/health every 0.2 s; status 0
# once it answers 200, 1 after TRIES polls or as soon as process PID is gone.
wait_for_health() {
  local tries="${2:-150}"
  for _ in $(seq 1 "$tries"); do
    curl -fs "$1/health" >/dev/null && return 0
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    sleep 0.2
  done
  return 1
}

# gemma_cache: the cache folder every script shares.
gemma_cache() { echo "${GEMMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-rs}"; }

# Every Python package the scripts install is pinned in
# scripts/python-constraints.txt (direct and transitive), so an upstream
# release cannot change what CI runs. llama-cpp-python only through
# llama_cpp_venv below.
LLAMA_CPP_PYTHON_VERSION=0.3.36

# constraints_hash: a short hash of scripts/python-constraints.txt (venvs record it).
constraints_hash() { sha256sum "$(git rev-parse --show-toplevel 2>/dev/null || pwd)/scripts/python-constraints.txt" | cut -c1-16; }

# pinned_venv DIR PACKAGE…: make sure DIR is a venv with PACKAGEs at the
# versions of scripts/python-constraints.txt (rebuilt when the packages or
# the pins change); prints DIR.
pinned_venv() {
  local dir=$1 want; shift
  want="$* pins $(constraints_hash)"
  if [ "$(cat "$dir/gemma-rs-pins.txt" 2>/dev/null)" != "$want" ] || [ ! -x "$dir/bin/python" ]; then
    echo "installing $* into $dir (pinned) ..." >&2
    rm -rf "$dir"
    python3 -m venv "$dir" || return 1
    "$dir/bin/pip" install -q -c scripts/python-constraints.txt "$@" >&2 || { echo "pinned_venv: installing $* into $dir failed" >&2; return 1; }
    echo "$want" > "$dir/gemma-rs-pins.txt"
  fi
  echo "$dir"
}
# llama_cpp_cmake_args [amx]: the CMake arguments that build ggml for this
# CPU's own features, each x86 instruction set named ON or OFF with
# GGML_NATIVE=OFF (-march=native would also switch on ggml's AMX kernels,
# which crash on Gemma's shapes on some Xeons); AMX only with the argument
# `amx`. Not x86-64: ggml's native build. Always LLAVA_BUILD=ON: libmtmd,
# llama.cpp's multimodal library, which scripts/check-mmproj-llama-cpp.sh
# compares image embeddings and encode times with. GEMMA_CPU_FLAGS replaces
# /proc/cpuinfo's flags (to test the choice for another CPU).
llama_cpp_cmake_args() {
  if [ "$(uname -m)" != x86_64 ] || [ ! -r /proc/cpuinfo ]; then
    echo "-DLLAVA_BUILD=ON -DGGML_NATIVE=ON"
    return
  fi
  local flags args="-DLLAVA_BUILD=ON -DGGML_NATIVE=OFF" opt f v
  flags=" ${GEMMA_CPU_FLAGS:-$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)} "
  # option, then the cpuinfo flags it needs (all of them)
  while read -r opt need; do
    v=ON
    for f in $need; do [[ "$flags" == *" $f "* ]] || v=OFF; done
    case "$opt" in GGML_AMX_*) [ "${1:-}" = amx ] || v=OFF ;; esac
    args+=" -D$opt=$v"
  done <<'FLAGS'
GGML_SSE42 sse4_2
GGML_AVX avx
GGML_AVX2 avx2
GGML_FMA fma
GGML_F16C f16c
GGML_BMI2 bmi2
GGML_AVX_VNNI avx_vnni
GGML_AVX512 avx512f avx512cd avx512vl avx512dq avx512bw
GGML_AVX512_VBMI avx512f avx512vbmi
GGML_AVX512_VNNI avx512f avx512_vnni
GGML_AVX512_BF16 avx512f avx512_bf16
GGML_AMX_TILE amx_tile avx512_vnni
GGML_AMX_INT8 amx_tile amx_int8 avx512_vnni
GGML_AMX_BF16 amx_tile amx_bf16 avx512_vnni
FLAGS
  echo "$args"
}

# llama_cpp_smoke PYTHON MODEL [CMAKE_ARGS]: evaluate 8 tokens of MODEL with
# llama.cpp in a process of its own, then a 56-token batch after them (matmul
# kernels such as ggml's AMX ones may only engage on larger batches);
# status 0 when the logits are finite, else a message on stderr naming the
# cause (a crash by signal, an import error, NaN).
llama_cpp_smoke() {
  local out rc=0
  out=$("$1" - "$2" 2>&1 <<'PY'
import math, sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=128, n_batch=64, n_threads=2, logits_all=True, verbose=False)
ids = llm.tokenize(b"The capital of France is Paris, and the capital of Italy is Rome. " * 8)[:64]
assert len(ids) == 64, f"the tokenizer gave {len(ids)} tokens"
for lo, hi in [(0, 8), (8, 64)]:
    llm.eval(ids[lo:hi])
    for row in (list(llm.scores[i]) for i in range(lo, hi)):
        assert all(math.isfinite(x) for x in row), f"non-finite logits in tokens {lo}..{hi}"
        assert max(row) > min(row), f"constant logits in tokens {lo}..{hi}"
print("smoke OK")
PY
  ) || rc=$?
  [ "$rc" = 0 ] && return 0
  if [ "$rc" -gt 128 ]; then
    echo "llama.cpp crashed with signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?')) in the smoke evaluation (8 then 56 tokens of $2)" >&2
  else
    echo "llama.cpp failed the smoke evaluation (8 then 56 tokens of $2): $(echo "$out" | tail -3)" >&2
  fi
  return 1
}

# llama_cpp_venv: make sure the llama.cpp reference venv exists and fits
# this machine, and print its path. The one way scripts get llama.cpp:
# llama-cpp-python $LLAMA_CPP_PYTHON_VERSION built from its sdist with
# llama_cpp_cmake_args (AMX only when the CPU has it and a smoke run with it
# passes, else rebuilt without it), plus numpy and safetensors, all pinned. The
# venv ($LLAMA_VENV, default <cache>/venv-llama) records what it was built
# with in gemma-rs-llama.txt and is rebuilt when that no longer matches this
# machine (a venv carried from another CPU type). Built wheels are kept in
# <cache>/llama-wheels/<args hash>/, so going back to a CPU type is quick.
# Every install ends with a smoke evaluation of the real model (8 tokens,
# then a 56-token batch).
# GEMMA_LLAMA_AMX=off skips the AMX attempt.
llama_cpp_venv() {
  local cache venv stamp want model args amx_args
  cache=$(gemma_cache)
  venv="${LLAMA_VENV:-$cache/venv-llama}"
  stamp="$venv/gemma-rs-llama.txt"
  args=$(llama_cpp_cmake_args)
  amx_args=$(llama_cpp_cmake_args amx)
  want="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION cpu: $amx_args pins $(constraints_hash)"
  if [ -f "$stamp" ] && [ "$(head -1 "$stamp")" = "$want" ] && "$venv/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
    echo "$venv"
    return 0
  fi
  [ -f "$stamp" ] && echo "llama_cpp_venv: $venv was built for another CPU type or package set: rebuilding" >&2
  model=$(scripts/fetch-model.sh) || { echo "llama_cpp_venv: the smoke model could not be fetched (scripts/fetch-model.sh)" >&2; return 1; }
  local tries=("$args") try used="" wheel reason
  [ "$amx_args" != "$args" ] && [ "${GEMMA_LLAMA_AMX:-auto}" != off ] && tries=("$amx_args" "$args")
  for try in "${tries[@]}"; do
    wheel=$(llama_cpp_wheel "$try") || return 1
    rm -rf "$venv"
    python3 -m venv "$venv" || return 1
    if ! "$venv/bin/pip" install -q -c scripts/python-constraints.txt "$wheel" numpy safetensors >&2; then
      echo "llama_cpp_venv: installing $wheel with numpy and safetensors into $venv failed" >&2
      return 1
    fi
    if [ -f "$(dirname "$wheel")/smoke-failed" ]; then
      reason=$(cat "$(dirname "$wheel")/smoke-failed")
    elif reason=$(llama_cpp_smoke "$venv/bin/python" "$model" "$try" 2>&1); then
      used="$try"
      break
    elif [ "$try" != "$args" ]; then
      echo "$reason" > "$(dirname "$wheel")/smoke-failed" # the AMX build: not tried again on this CPU type
    fi
    if [ "$try" = "$amx_args" ] && [ "$try" != "$args" ]; then
      echo "llama_cpp_venv: the build with AMX failed its smoke run ($reason): using the build without AMX" >&2
    else
      rm -rf "$venv"
      echo "llama_cpp_venv: llama-cpp-python $LLAMA_CPP_PYTHON_VERSION built with [$try] failed its smoke run: $reason" >&2
      return 1
    fi
  done
  { echo "$want"; echo "cmake: $used"; "$venv/bin/python" -c 'import llama_cpp; print("system_info:", llama_cpp.llama_print_system_info().decode().strip())'; } > "$stamp"
  echo "llama_cpp_venv: llama-cpp-python $LLAMA_CPP_PYTHON_VERSION ready in $venv, built with: $used" >&2
  echo "$venv"
}

# llama_cpp_wheel CMAKE_ARGS: the path of a llama-cpp-python wheel built with
# CMAKE_ARGS (built once per argument set, ~6 minutes on 2 cores; pip's own
# wheel cache is bypassed, since it does not key on CMAKE_ARGS).
llama_cpp_wheel() {
  local dir log w
  dir="$(gemma_cache)/llama-wheels/$(echo "$LLAMA_CPP_PYTHON_VERSION $1" | sha256sum | cut -c1-16)"
  w=$(ls "$dir"/llama_cpp_python-*.whl 2>/dev/null | head -1)
  if [ -n "$w" ]; then echo "$w"; return 0; fi
  mkdir -p "$dir"
  log="$dir/build.log"
  echo "llama_cpp_venv: building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION with [$1] (compiles llama.cpp, ~6 min on 2 cores; log $log)..." >&2
  echo "$1" > "$dir/cmake-args.txt"
  if ! PIP_CONSTRAINT="$PWD/scripts/python-constraints.txt" CMAKE_ARGS="$1" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python3 -m pip wheel -q --no-deps --no-cache-dir \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -w "$dir" > "$log" 2>&1; then
    tail -30 "$log" >&2
    echo "llama_cpp_venv: building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION failed (full log: $log)" >&2
    return 1
  fi
  ls "$dir"/llama_cpp_python-*.whl | head -1
}

# llama_cpp_build_info VENV: one line naming what the llama.cpp build uses
# (its CMake instruction-set arguments and ggml's own system info).
llama_cpp_build_info() {
  local on
  on=$(sed -n 's/^cmake: //p' "$1/gemma-rs-llama.txt" | tr ' ' '\n' | sed -n 's/^-DGGML_\(.*\)=ON$/\1/p' | paste -sd' ')
  echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION, built with GGML_NATIVE=OFF and ON: ${on:-none}; ggml reports: $(sed -n 's/^system_info: //p' "$1/gemma-rs-llama.txt")"
}
