//! `gemma finetune`, `merge` and `export-lora` from the command line, on
//! the tiny Gemma 3: a run with checkpoints and an exact resume, the
//! adapter loading back for generation, merged models equal to the adapter
//! applied at run time, llama.cpp's GGUF LoRA layout, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gemma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma")).args(args).output().expect("run gemma")
}

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3").display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn data(dir: &Path) -> String {
    let mut s = String::new();
    for i in 0..24 {
        s += &format!("{{\"prompt\": \"hello {i} \", \"completion\": \"world {}\"}}\n", i * 2);
    }
    for i in 0..8 {
        s += &format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi {i}\"}}, {{\"role\": \"assistant\", \"content\": \"yo {i}\"}}]}}\n");
    }
    s += "{\"text\": \"just some text to learn\"}\n";
    write(dir, "train.jsonl", &s)
}

fn log_losses(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().filter(|l| l.contains("\"loss\"")).map(|l| l.split(",\"grad_norm\"").next().unwrap().to_string()).collect()
}

#[test]
fn finetune_writes_a_peft_adapter_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let train = data(dir.path());
    let out = dir.path().join("run");
    let o = gemma(&["finetune", "-m", &tiny(), "--data", &train, "--out", out.to_str().unwrap(), "--epochs", "2", "--batch-size", "4", "--lr", "5e-3", "--rank", "4", "--save-every", "5", "--eval-data", &train, "--eval-every", "5", "--dropout", "0.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["adapter_config.json", "adapter_model.safetensors", "trainer_log.jsonl", "loss.svg", "README.md", "checkpoint-5/trainer_state.json"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let log = std::fs::read_to_string(out.join("trainer_log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for k in ["step", "loss", "learning_rate", "grad_norm", "tokens", "tokens_per_second", "epoch"] {
        assert!(first.get(k).is_some(), "trainer_log.jsonl lacks {k}: {first}");
    }
    assert!(log.contains("\"eval_loss\""));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    // Resume from step 5 into another folder: the same losses and adapter.
    let again = dir.path().join("again");
    let ckpt = out.join("checkpoint-5");
    let o = gemma(&["finetune", "-m", &tiny(), "--data", &train, "--out", again.to_str().unwrap(), "--epochs", "2", "--batch-size", "4", "--lr", "5e-3", "--rank", "4", "--eval-data", &train, "--eval-every", "5", "--dropout", "0.1", "--resume", ckpt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(log_losses(&out.join("trainer_log.jsonl")), log_losses(&again.join("trainer_log.jsonl")));
    assert_eq!(std::fs::read(out.join("adapter_model.safetensors")).unwrap(), std::fs::read(again.join("adapter_model.safetensors")).unwrap());
    // The adapter serves at once.
    let o = gemma(&["generate", "-m", &tiny(), "--lora", out.to_str().unwrap(), "-p", "hello 3 ", "-n", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A resume that does not fit this run is refused.
    let o = gemma(&["finetune", "-m", &tiny(), "--data", &train, "--out", dir.path().join("x").to_str().unwrap(), "--rank", "8", "--resume", ckpt.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("rank 4"), "{}", stderr(&o));
    let o = gemma(&["finetune", "-m", &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma2").display().to_string(), "--data", &train, "--out", dir.path().join("y").to_str().unwrap(), "--rank", "4", "--resume", ckpt.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("another model"), "{}", stderr(&o));
}

#[test]
fn merged_models_equal_the_adapter_at_run_time_and_export_lora_is_llama_cpp_layout() {
    let dir = tempfile::tempdir().unwrap();
    let lora = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3-lora").display().to_string();
    let merged = dir.path().join("merged");
    let o = gemma(&["merge", "-m", &tiny(), "--lora", &lora, "--out", merged.to_str().unwrap(), "--dtype", "f32"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(line.contains("perplexity") && line.contains("merged f32"), "{line}");
    // The merged f32 folder and the adapter at run time: same perplexity to rounding.
    let nums: Vec<f64> = line.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse::<f64>().ok()).collect();
    assert!(nums.len() >= 3 && (nums[1] - nums[2]).abs() < 1e-4 * nums[1], "{line}");
    let gg = dir.path().join("merged.gguf");
    let o = gemma(&["merge", "-m", &tiny(), "--lora", &lora, "--out", gg.to_str().unwrap(), "--dtype", "q8_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(gemma(&["generate", "-m", gg.to_str().unwrap(), "-p", "hi", "-n", "3"]).status.success());

    let out = dir.path().join("adapter.gguf");
    let o = gemma(&["export-lora", "--lora", &lora, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = gemma_formats_check(&out);
    assert!(f.contains("general.type=adapter") && f.contains("adapter.type=lora") && f.contains("adapter.lora.alpha=8"), "{f}");
    // lora_a [in, r] and lora_b [r, out] in ggml order (hidden 48, r 4, q 64).
    assert!(f.contains("blk.0.attn_q.weight.lora_a [48, 4]") && f.contains("blk.0.attn_q.weight.lora_b [4, 64]"), "{f}");
}

/// A GGUF's metadata and tensor dims as `key=value` / `name [dims]` lines.
fn gemma_formats_check(path: &Path) -> String {
    let f = gemma_formats::GgufFile::open(path).unwrap();
    let mut s = String::new();
    for k in ["general.type", "adapter.type", "general.architecture"] {
        s += &format!("{k}={}\n", f.get(k).and_then(|v| v.as_str()).unwrap_or("?"));
    }
    if let Some(gemma_formats::GgufValue::F32(a)) = f.get("adapter.lora.alpha") {
        s += &format!("adapter.lora.alpha={a}\n");
    }
    for t in &f.header.tensors {
        s += &format!("{} {:?}\n", t.name, t.dims);
    }
    s
}

#[test]
fn finetune_bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let model = tiny();
    let run = |data: &str, extra: &[&str]| {
        let mut args = vec!["finetune", "-m", &model[..], "--data", data, "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = gemma(&args);
        assert!(!o.status.success());
        stderr(&o)
    };
    let bad = write(dir.path(), "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
    assert!(run(&bad, &[]).contains("line 2"), "{}", run(&bad, &[]));
    let role = write(dir.path(), "role.jsonl", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}\n");
    assert!(run(&role, &[]).contains("unknown role 'wizard'"));
    let empty = write(dir.path(), "empty.jsonl", "\n");
    assert!(run(&empty, &[]).contains("no training examples"));
    let good = write(dir.path(), "good.jsonl", "{\"text\": \"some words here\"}\n");
    assert!(run(&good, &["--targets", "lm_head"]).contains("matches no module"));
    assert!(run(&good, &["--rank", "0"]).contains("rank must be at least 1"));
    assert!(run(&dir.path().join("missing.jsonl").display().to_string(), &[]).contains("missing.jsonl"));
    // A loss that blows up: stopped with the step named, no adapter presented as complete.
    let e = run(&good, &["--lr", "1e30", "--max-steps", "20", "--save-every", "1", "--max-grad-norm", "0", "--adam-eps", "1e-30"]);
    assert!(e.contains("training stopped at step"), "{e}");
    assert!(!out.join("adapter_model.safetensors").exists(), "a partial adapter was written");
    assert!(e.contains("checkpoint-"), "{e}");
    assert!(!out.join("adapter_config.json").exists());
}
