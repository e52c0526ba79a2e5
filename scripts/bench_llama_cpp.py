#!/usr/bin/env python3
"""llama.cpp's speed on a GGUF file, measured like `gemma bench` (pp: one
batch of N prompt tokens; tg: N single-token decode steps; each after DEPTH
tokens already in the cache, computed once and restored untimed for every
repetition), through llama-cpp-python. Prints one JSON array with
llama-bench's field names.
Usage: bench_llama_cpp.py MODEL THREADS N_PROMPT N_GEN REPS [DEPTHS=0]"""
import json
import resource
import statistics
import sys
import time

from llama_cpp import Llama

model, threads, n_prompt, n_gen, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
depths = [int(d) for d in (sys.argv[6] if len(sys.argv) > 6 else "0").split(",")]
t_load = time.perf_counter()
llm = Llama(model, n_ctx=max(depths) + max(n_prompt, n_gen) + 8, n_batch=max(n_prompt, 512), n_ubatch=max(n_prompt, 512),
            n_threads=threads, n_threads_batch=threads, verbose=False)
load_time_s = time.perf_counter() - t_load
ids = [llm.token_bos()] + [1000 + (i * 7919) % 200000 for i in range(max(depths) + max(n_prompt, n_gen))]

rows = []
for depth in depths:
    llm.reset()
    if depth:
        llm.eval(ids[:depth])
    # (A saved state costs memory: only taken when there is a depth to restore.)
    start = llm.save_state() if depth else None
    tail = ids[depth:]

    def restore():
        if start is None:
            llm.reset()
        else:
            llm.load_state(start)

    def pp():
        restore()
        t = time.perf_counter()
        llm.eval(tail[:n_prompt])
        return time.perf_counter() - t

    def tg():
        restore()
        t = time.perf_counter()
        for i in range(n_gen):
            llm.eval([tail[i]])
        return time.perf_counter() - t

    for n, fn, kind in [(n_prompt, pp, "pp"), (n_gen, tg, "tg")]:
        if n == 0:
            continue
        fn()  # warm-up
        s = [fn() for _ in range(reps)]
        ts = [n / x for x in s]
        rows.append({"n_prompt": n if kind == "pp" else 0, "n_gen": n if kind == "tg" else 0, "n_depth": depth, "n_threads": threads,
                     "avg_ts": statistics.mean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
                     "samples_ts": ts, "model_filename": model, "load_time_s": load_time_s,
                     # Whole process (includes the Python interpreter, ~10-15 MiB).
                     "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
print(json.dumps(rows))
