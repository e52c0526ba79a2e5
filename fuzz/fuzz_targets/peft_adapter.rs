//! The PEFT adapter loader: a fuzzed `adapter_config.json` beside the tiny
//! fixture's real `adapter_model.safetensors`, and (second half of the
//! input) a fuzzed weights file beside the real config.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let cfg_text = std::fs::read_to_string(common::testdata("tiny-gemma3/config.json")).expect("config");
    let cfg = gemma_model::GemmaConfig::from_json(&serde_json::from_str(&cfg_text).expect("json")).expect("config parses");
    let src = common::testdata("tiny-gemma3-lora");
    let (a, b) = data.split_at(data.len() / 2);
    // A fuzzed config, real weights.
    let dir = common::scratch().join("lora-a");
    std::fs::create_dir_all(&dir).expect("folder");
    let w = dir.join("adapter_model.safetensors");
    if !w.exists() {
        std::fs::copy(src.join("adapter_model.safetensors"), &w).expect("copy weights");
    }
    std::fs::write(dir.join("adapter_config.json"), a).expect("write input");
    let _ = gemma_model::LoraAdapter::load(&dir, &cfg);
    // A real config, fuzzed weights.
    let dir = common::scratch().join("lora-b");
    std::fs::create_dir_all(&dir).expect("folder");
    let c = dir.join("adapter_config.json");
    if !c.exists() {
        std::fs::copy(src.join("adapter_config.json"), &c).expect("copy config");
    }
    std::fs::write(dir.join("adapter_model.safetensors"), b).expect("write input");
    let _ = gemma_model::LoraAdapter::load(&dir, &cfg);
});
