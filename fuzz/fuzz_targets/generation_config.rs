//! `generation_config.json`: parse, and turn it into sampling parameters.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch().join("generation_config.json");
    std::fs::write(&path, data).expect("write input");
    if let Ok(g) = gemma_generate::GenerationConfig::from_file(&path) {
        let _ = g.sampling_params(7).validate();
    }
});
