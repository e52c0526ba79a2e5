//! A safetensors file (header and data): open, list, load every tensor.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch().join("model.safetensors");
    std::fs::write(&path, data).expect("write input");
    if let Ok(set) = gemma_formats::SafetensorsSet::open_files(&[path]) {
        let names: Vec<String> = set.tensors().map(|t| t.name.clone()).collect();
        for n in names {
            let _ = set.load(&n);
        }
    }
});
