#!/usr/bin/env python3
"""Golden data for the quant block layouts, from the `gguf` package (PyPI),
whose numpy (de)quantizers mirror ggml's reference C code.

    python tools/reference/make_quant_goldens.py testdata/quant_goldens.safetensors

For each type T: `T.blocks` (u8, 8 random blocks with sane f16 scales) and
`T.values` (f32, gguf's dequantization of them). For the types gguf can
quantize: `T.input` (f32) and `T.quantized` (u8, gguf's quantization).
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "testdata/quant_goldens.safetensors"
rng = np.random.default_rng(1234)

# (type, block bytes, offsets of f16 scale fields)
TYPES = {
    "q4_0": (T.Q4_0, 18, [0]),
    "q4_1": (T.Q4_1, 20, [0, 2]),
    "q5_0": (T.Q5_0, 22, [0]),
    "q5_1": (T.Q5_1, 24, [0, 2]),
    "q8_0": (T.Q8_0, 34, [0]),
    "q2_k": (T.Q2_K, 84, [80, 82]),
    "q3_k": (T.Q3_K, 110, [108]),
    "q4_k": (T.Q4_K, 144, [0, 2]),
    "q5_k": (T.Q5_K, 176, [0, 2]),
    "q6_k": (T.Q6_K, 210, [208]),
}

out = {}
for name, (qt, nbytes, scale_offsets) in TYPES.items():
    blocks = rng.integers(0, 256, size=(8, nbytes), dtype=np.uint8)
    for off in scale_offsets:
        scales = rng.uniform(-0.05, 0.05, size=8).astype(np.float16)
        blocks[:, off:off + 2] = scales.view(np.uint8).reshape(8, 2)
    values = quants.dequantize(blocks.reshape(-1), qt).astype(np.float32).reshape(-1)
    out[f"{name}.blocks"] = blocks.reshape(-1)
    out[f"{name}.values"] = values
    x = rng.normal(0, 0.1, size=(4, 256)).astype(np.float32)
    try:
        q = quants.quantize(x, qt)
    except NotImplementedError:
        continue
    out[f"{name}.input"] = x.reshape(-1)
    out[f"{name}.quantized"] = np.ascontiguousarray(q).reshape(-1).view(np.uint8)
    print(name, "quantize golden")
save_file(out, OUT)
print("wrote", OUT)
