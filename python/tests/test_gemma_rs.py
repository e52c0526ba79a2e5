"""The gemma_rs Python package against the CLI and transformers' goldens.

Run by scripts/check-python.sh (in CI) with the installed wheel:
GEMMA_BIN is the CLI to compare with, GEMMA_TESTDATA the fixtures. The
real-model tests skip when the model is absent unless
GEMMA_REQUIRE_REAL_MODEL is set.
"""
import json
import os
import signal
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gemma_rs import Gemma, TextStream

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("GEMMA_TESTDATA", ROOT / "testdata"))
GEMMA_BIN = os.environ.get("GEMMA_BIN", str(ROOT / "target" / "release" / "gemma"))
REAL = Path(os.environ.get("GEMMA_MODEL", Path.home() / ".cache" / "gemma-rs" / "models" / "gemma-3-270m-q4_k_m.gguf"))


def safetensors(path):
    """{name: numpy array} of a safetensors file (F32 and I64 only)."""
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, e = v["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[v["dtype"]]
        out[k] = np.frombuffer(b[8 + n + a:8 + n + e], dtype=dt).reshape(v["shape"])
    return out


def cli(*args):
    """stdout of the gemma CLI."""
    r = subprocess.run([GEMMA_BIN, *args], capture_output=True, text=True, check=True, timeout=600)
    return r.stdout


def real_model():
    if not REAL.is_file():
        if os.environ.get("GEMMA_REQUIRE_REAL_MODEL"):
            pytest.fail(f"the real model is required (GEMMA_REQUIRE_REAL_MODEL) and absent: {REAL}")
        pytest.skip(f"real model not found at {REAL} (scripts/fetch-model.sh)")
    return REAL


@pytest.fixture(scope="module")
def tiny():
    return Gemma(str(TESTDATA / "tiny-gemma3"))


def test_logits_equal_transformers(tiny):
    g = safetensors(TESTDATA / "tiny-gemma3" / "goldens.safetensors")
    for i in range(6):
        ids = g[f"seq{i}.ids"].tolist()
        got = tiny.logits(ids)
        assert got.shape == (len(ids), tiny.n_vocab) and got.dtype == np.float32
        want = g[f"seq{i}.logits"]
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), f"seq{i}"


def test_greedy_equals_transformers_and_the_cli(tiny):
    g = safetensors(TESTDATA / "tiny-gemma3" / "goldens.safetensors")
    for i in range(2):
        prompt = g[f"greedy.{i}.prompt"].tolist()
        want = g[f"greedy.{i}.ids"].tolist()
        text = tiny.generate(prompt, max_tokens=len(want), temperature=0)
        assert tiny.tokenize(text, add_bos=False) == want or text == tiny.detokenize(want)
    text = tiny.generate("hello world", max_tokens=20, temperature=0)
    out = cli("generate", "-m", str(TESTDATA / "tiny-gemma3"), "-p", "hello world", "-n", "20", "-t", "0")
    assert out.rstrip("\n") == text


def test_streaming_pieces_make_the_text(tiny):
    text = tiny.generate("hello world", max_tokens=30, temperature=0)
    stream = tiny.generate("hello world", max_tokens=30, temperature=0, stream=True)
    assert isinstance(stream, TextStream)
    pieces = list(stream)
    assert "".join(pieces) == text and len(pieces) > 1


def test_stop_strings_cut_the_text(tiny):
    text = tiny.generate("hello world", max_tokens=30, temperature=0, seed=1)
    assert len(text) >= 4
    stop = text[len(text) // 2:len(text) // 2 + 2]
    cut = tiny.generate("hello world", max_tokens=30, temperature=0, stop=stop)
    assert cut == text[:text.index(stop)]
    assert "".join(tiny.generate("hello world", max_tokens=30, temperature=0, stop=[stop, "never"], stream=True)) == cut


def test_seeded_sampling_repeats(tiny):
    a = tiny.generate("hello", max_tokens=20, temperature=0.9, seed=7)
    assert a == tiny.generate("hello", max_tokens=20, temperature=0.9, seed=7)
    out = cli("generate", "-m", str(TESTDATA / "tiny-gemma3"), "-p", "hello", "-n", "20", "--temperature", "0.9", "--seed", "7")
    assert out.rstrip("\n") == a


def test_json_schema_answer_parses(tiny):
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"enum": ["red", "green"]}},
              "required": ["a", "b"], "additionalProperties": False}
    text = tiny.generate("json:", json_schema=schema, max_tokens=200, temperature=0)
    v = json.loads(text)
    assert isinstance(v["a"], bool) and v["b"] in ("red", "green")
    assert tiny.generate("x", regex="[0-9]{3}", max_tokens=10, temperature=0).isdigit()


def test_chat_completion_is_openai_shaped():
    g = Gemma(str(TESTDATA / "tiny-gemma4-it"))
    msgs = [{"role": "user", "content": "Why is the sky blue?"}]
    out = g.create_chat_completion(msgs, max_tokens=12, temperature=0)
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["role"] == "assistant"
    assert out["usage"]["completion_tokens"] == 12 and out["choices"][0]["finish_reason"] == "length"
    assert g.chat(msgs, max_tokens=12, temperature=0)["choices"] == out["choices"]
    with pytest.raises(TypeError, match="regex"):
        g.chat(msgs, regex="a")
    chunks = list(g.create_chat_completion(msgs, max_tokens=12, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == out["choices"][0]["message"]["content"]
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"], "additionalProperties": False}}}
    ans = g.create_chat_completion(msgs, response_format=fmt, max_tokens=200, temperature=0)
    assert isinstance(json.loads(ans["choices"][0]["message"]["content"])["x"], bool)


def test_lora_adapter_equals_the_cli_and_peft():
    g = Gemma(str(TESTDATA / "tiny-gemma3"), lora=str(TESTDATA / "tiny-gemma3-lora"))
    want = safetensors(TESTDATA / "tiny-gemma3-lora" / "goldens.safetensors")
    got = g.logits(want["ids"].tolist())
    assert np.abs(got - want["logits"]).max() <= 1e-4 * np.abs(want["logits"]).max()
    out = cli("generate", "-m", str(TESTDATA / "tiny-gemma3"), "--lora", str(TESTDATA / "tiny-gemma3-lora"), "-p", "hello", "-n", "16", "-t", "0")
    assert out.rstrip("\n") == g.generate("hello", max_tokens=16, temperature=0)


def test_embeddings_equal_sentence_transformers():
    e = Gemma(str(TESTDATA / "tiny-embeddinggemma"))
    gold = json.loads((TESTDATA / "tiny-embeddinggemma" / "goldens.json").read_text())
    v = e.embed(gold["texts"])
    want = np.array(gold["none.embeddings"], dtype=np.float32)
    assert v.shape == want.shape and v.dtype == np.float32
    assert np.abs(v - want).max() < 1e-4
    q = e.embed(gold["texts"], prompt_name="query", dimensions=16)
    assert q.shape == (3, 16) and np.abs(q - np.array(gold["query.dim16"], dtype=np.float32)).max() < 1e-4
    assert e.embed("one").shape == (1, want.shape[1])


def test_eight_threads_equal_sequential(tiny):
    prompts = [f"prompt number {i} says" for i in range(8)]
    kw = [dict(max_tokens=24, temperature=0), dict(max_tokens=24, temperature=0.8, seed=3)]
    for k in kw:
        alone = [tiny.generate(p, **k) for p in prompts]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda p: tiny.generate(p, **k), prompts))
        assert together == alone, k


def test_bad_input_raises_the_right_exception(tiny, tmp_path):
    with pytest.raises(FileNotFoundError):
        Gemma("/nonexistent/model.gguf")
    with pytest.raises(ValueError, match="dtype"):
        Gemma(str(TESTDATA / "tiny-gemma3"), dtype="q9_z")
    with pytest.raises(ValueError, match="kv_type"):
        Gemma(str(TESTDATA / "tiny-gemma3"), kv_type="f8")
    with pytest.raises(ValueError, match="temperature"):
        tiny.generate("x", temperature=-1)
    with pytest.raises(ValueError, match="at most one"):
        tiny.generate("x", regex="a", grammar="start: \"a\"")
    with pytest.raises(TypeError):
        tiny.generate(3.5)
    with pytest.raises(ValueError):
        tiny.detokenize([10**6])
    with pytest.raises(ValueError):
        tiny.logits([10**6])
    with pytest.raises(TypeError, match="max_token"):
        tiny.generate("x", max_token=3)
    with pytest.raises(TypeError, match="temperature"):
        tiny.generate("x", temperature="hot")
    with pytest.raises(ValueError, match="json_schema"):
        tiny.generate("x", json_schema="{not json")
    # The context: a prompt longer than it is refused, not truncated.
    with pytest.raises(ValueError):
        tiny.generate([2] + [5] * (tiny.n_ctx + 5), max_tokens=4)
    bad = tmp_path / "bad-model.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(ValueError):
        Gemma(str(bad))


def test_real_model_equals_the_cli():
    path = str(real_model())
    g = Gemma(path)
    text = g.generate("The capital of France is", max_tokens=24, temperature=0)
    out = cli("generate", "-m", path, "-p", "The capital of France is", "-n", "24", "-t", "0")
    assert out.rstrip("\n") == text
    logits = g.logits(g.tokenize("The capital of France is"))
    assert g.detokenize([int(logits[-1].argmax())]) == g.generate("The capital of France is", max_tokens=1, temperature=0)


def test_ctrl_c_stops_a_generation():
    g = Gemma(str(real_model()))
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        g.generate("Once upon a time", max_tokens=4000, temperature=0.8, seed=1)
    assert time.perf_counter() - t0 < 10
    # The engine goes on serving.
    assert g.generate("Hello", max_tokens=4, temperature=0)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def test_score_equals_the_logits(tiny):
    context, conts = "hello world and", [" more", " the end", " x"]
    got = tiny.score(context, conts)
    assert len(got) == 3
    for cont, (lp, greedy) in zip(conts, got):
        # lm-eval's split: the context's trailing space joins the continuation.
        ctx_ids = tiny.tokenize(context.rstrip(), add_bos=False)
        whole = tiny.tokenize(context.rstrip() + cont, add_bos=False)
        ids = [2] + whole
        n = len(whole) - len(ctx_ids)
        lsm = log_softmax(tiny.logits(ids))
        rows = range(len(ids) - n - 1, len(ids) - 1)
        want = sum(lsm[r, ids[r + 1]] for r in rows)
        assert abs(lp - want) < 1e-3, (cont, lp, want)
        assert greedy == all(int(lsm[r].argmax()) == ids[r + 1] for r in rows)
    with pytest.raises(ValueError):
        tiny.score("context", [""])


def test_perplexity_equals_the_cli(tiny, tmp_path):
    text = "The quick brown fox jumps over the lazy dog. " * 12
    got = tiny.perplexity(text, ctx=32)
    f = tmp_path / "text.txt"
    f.write_text(text)
    want = json.loads(cli("perplexity", "-m", str(TESTDATA / "tiny-gemma3"), "--file", str(f), "--ctx", "32", "--json"))
    assert got["tokens"] == want["tokens"] and abs(got["ppl"] - want["ppl"]) <= 1e-9 * want["ppl"]


def test_quantize_writes_what_the_cli_writes(tmp_path):
    from gemma_rs import quantize
    a, b = tmp_path / "py.gguf", tmp_path / "cli.gguf"
    report = quantize(str(TESTDATA / "tiny-gemma3"), str(a), "q8_0")
    assert report["tensors"] > 0 and report["bytes"] == a.stat().st_size
    cli("quantize", "-m", str(TESTDATA / "tiny-gemma3"), "-t", "q8_0", "-o", str(b))
    assert a.read_bytes() == b.read_bytes()
    assert Gemma(str(a)).generate("hello", max_tokens=4, temperature=0)
    with pytest.raises(ValueError, match="q9"):
        quantize(str(TESTDATA / "tiny-gemma3"), str(a), "q9")


def test_real_model_scores_as_gemma_eval(tmp_path):
    path = str(real_model())
    g = Gemma(path)
    item = json.loads((TESTDATA / "eval" / "mc.jsonl").read_text().splitlines()[0])
    got = g.score(item["context"], item["choices"])
    task = tmp_path / "one.jsonl"
    task.write_text(json.dumps(item) + "\n")
    samples = tmp_path / "samples.jsonl"
    cli("eval", "-m", path, "--task", str(task), "--samples", str(samples))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    want = [r["loglikelihood"] for r in rows]
    assert [round(x[0], 4) for x in got] == [round(w, 4) for w in want]
    assert all(isinstance(x[1], bool) for x in got)


def test_finetune_equals_the_cli_and_reports_each_step(tiny, tmp_path):
    from gemma_rs import finetune
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}:", "completion": f" answer {i % 3}"}) + "\n" for i in range(12)))
    steps = []
    report = finetune(tiny, str(data), str(tmp_path / "py"), max_steps=3, per_device_train_batch_size=4, r=4,
                      lora_alpha=8, learning_rate=1e-3, seed=5, target_modules=["q_proj", "v_proj"], callback=steps.append)
    assert [s["step"] for s in steps] == [1, 2, 3] and steps[0]["total_steps"] == 3
    assert report["steps"] == 3 and report["last_loss"] == steps[-1]["loss"] and report["trainable_parameters"] > 0
    cli("finetune", "-m", str(TESTDATA / "tiny-gemma3"), "--data", str(data), "--out", str(tmp_path / "cli"), "--max-steps", "3",
        "--batch-size", "4", "--rank", "4", "--alpha", "8", "--lr", "1e-3", "--seed", "5", "--targets", "q_proj,v_proj")
    a = (tmp_path / "py" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "cli" / "adapter_model.safetensors").read_bytes()
    # The adapter loads and changes the model.
    tuned = Gemma(str(TESTDATA / "tiny-gemma3"), lora=str(tmp_path / "py"))
    assert not np.array_equal(tuned.logits([2, 5, 6]), tiny.logits([2, 5, 6]))
    # A callback returning False stops the run; nothing is written.
    with pytest.raises(RuntimeError, match="stopped"):
        finetune(str(TESTDATA / "tiny-gemma3"), str(data), str(tmp_path / "stopped"), max_steps=5, callback=lambda s: s["step"] < 2)
    assert not (tmp_path / "stopped" / "adapter_model.safetensors").exists()
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        finetune(tiny, str(data), str(tmp_path / "x"), lr_scheduler_type="zigzag")
    with pytest.raises(FileNotFoundError):
        finetune(tiny, str(tmp_path / "missing.jsonl"), str(tmp_path / "x"))


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "description": "Sum",
     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
]


def serve_chat(model, body):
    """One chat completion from `gemma serve` (the CLI's server) on loopback."""
    import socket
    import urllib.request
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([GEMMA_BIN, "serve", "-m", model, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                     {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)
    finally:
        proc.terminate()
        proc.wait()


def test_tool_calls_are_parsed_as_the_server_parses_them():
    model = str(TESTDATA / "tiny-functiongemma")
    g = Gemma(model)
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    out = g.chat(msgs, tools=TOOLS, tool_choice=named, max_tokens=60, temperature=0)
    c = out["choices"][0]
    call = c["message"]["tool_calls"][0]
    assert c["message"]["content"] is None and c["finish_reason"] == "stop"
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args["city"], str) and len(args["city"]) <= 12
    served = serve_chat(model, {"messages": msgs, "tools": TOOLS, "tool_choice": named, "max_tokens": 60, "temperature": 0})
    assert served["choices"][0]["message"]["tool_calls"][0]["function"] == call["function"]
    for seed in range(3):
        r = g.chat(msgs, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=60, temperature=1.0, seed=seed)
        assert r["choices"][0]["finish_reason"] == "tool_calls"
        assert r["choices"][0]["message"]["tool_calls"][0]["function"]["name"] in ("get_weather", "add")
    chunks = list(g.chat(msgs, tools=TOOLS, tool_choice=named, max_tokens=60, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"] == call["function"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    none = g.chat(msgs, tools=TOOLS, tool_choice="none", max_tokens=8, temperature=0)
    assert none["choices"][0]["message"]["content"] == g.chat(msgs, max_tokens=8, temperature=0)["choices"][0]["message"]["content"]
    with pytest.raises(ValueError, match="fly"):
        g.chat(msgs, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "fly"}})
    with pytest.raises(ValueError, match="together"):
        g.chat(msgs, tools=TOOLS, tool_choice="required", response_format={"type": "json_object"})
