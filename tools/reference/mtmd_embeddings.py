#!/usr/bin/env python3
"""llama.cpp's image embeddings through libmtmd (llama-cpp-python's
mtmd_cpp bindings): load a text GGUF and an mmproj GGUF, encode the RGB
image written by `cargo run --example image_embeddings` (OUT.rgb), and
compare with its soft tokens (OUT.f32). Prints one JSON line: tokens, the
largest absolute difference, the largest |value|, and the encode time.
Usage: mtmd_embeddings.py TEXT_GGUF MMPROJ_GGUF OUT [THREADS]"""
import ctypes
import json
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import mtmd_cpp as m

text_gguf, mmproj, out = sys.argv[1], sys.argv[2], sys.argv[3]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
llama_cpp.llama_backend_init()
mp = llama_cpp.llama_model_default_params()
model = llama_cpp.llama_model_load_from_file(text_gguf.encode(), mp)
if not model:
    raise SystemExit(f"llama.cpp could not load {text_gguf}")
params = m.mtmd_context_params_default()
params.use_gpu = False
params.n_threads = threads
params.print_timings = False
params.warmup = False
ctx = m.mtmd_init_from_file(mmproj.encode(), model, params)
if not ctx:
    raise SystemExit(f"libmtmd could not load {mmproj}")
raw = open(out + ".rgb", "rb").read()
nx, ny = int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little")
pixels = (ctypes.c_uint8 * (len(raw) - 8)).from_buffer_copy(raw[8:])
bitmap = m.mtmd_bitmap_init(nx, ny, pixels)
chunks = m.mtmd_input_chunks_init()
text = m.mtmd_input_text()
marker = m.mtmd_default_marker()
text.text = b"Look: " + marker
text.text_len = len(text.text)
text.add_special = False
text.parse_special = True
bitmaps = (m.mtmd_bitmap_p_ctypes * 1)(bitmap)
rc = m.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1)
if rc != 0:
    raise SystemExit(f"mtmd_tokenize failed ({rc})")
image_chunk = None
for i in range(m.mtmd_input_chunks_size(chunks)):
    c = m.mtmd_input_chunks_get(chunks, i)
    if m.mtmd_input_chunk_get_type(c) == 1:  # MTMD_INPUT_CHUNK_TYPE_IMAGE
        image_chunk = c
n = m.mtmd_input_chunk_get_n_tokens(image_chunk)
t0 = time.perf_counter()
rc = m.mtmd_encode_chunk(ctx, image_chunk)
secs = time.perf_counter() - t0
if rc != 0:
    raise SystemExit(f"mtmd_encode_chunk failed ({rc})")
embd = m.mtmd_get_output_embd(ctx)
ours = np.fromfile(out + ".f32", dtype="<f4")
theirs = np.ctypeslib.as_array(embd, shape=(ours.size,)).copy() if ours.size else np.zeros(0)
if n * (ours.size // max(n, 1)) != ours.size:
    raise SystemExit(f"llama.cpp has {n} image tokens; ours {ours.size} values")
print(json.dumps({"tokens": n, "max_abs_diff": float(np.abs(ours - theirs).max()), "max_abs": float(np.abs(ours).max()),
                  "encode_seconds": round(secs, 4)}))
