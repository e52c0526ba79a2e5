#!/usr/bin/env python3
"""Re-quantize a GGUF with llama.cpp's own quantizer (llama-cpp-python), to
compare its files with `gemma quantize`'s on the same source:

    python tools/reference/quantize_with_llama_cpp.py IN.gguf OUT_DIR [TYPE ...]

writes OUT_DIR/llama-TYPE.gguf for each TYPE (default: q8_0 q6_k q5_k_m
q4_k_m q4_0 q3_k_m); score them with `gemma perplexity -m FILE ...`.
"""
import ctypes
import os
import sys

import llama_cpp

FTYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_m": 12, "q4_k_s": 14,
          "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}

src, out = sys.argv[1], sys.argv[2]
types = sys.argv[3:] or ["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m"]
os.makedirs(out, exist_ok=True)
for t in types:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[t]
    p.allow_requantize = True
    p.nthread = os.cpu_count()
    dst = os.path.join(out, f"llama-{t}.gguf")
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama.cpp failed to quantize to {t} (code {rc})")
    print(dst)
