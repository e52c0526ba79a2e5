//! A sharded checkpoint's `model.safetensors.index.json` beside a real
//! shard: open the folder.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("sharded");
    std::fs::create_dir_all(&dir).expect("folder");
    let shard = dir.join("model-00001-of-00001.safetensors");
    if !shard.exists() {
        std::fs::copy(common::testdata("tiny-gemma3/model.safetensors"), &shard).expect("copy shard");
    }
    std::fs::write(dir.join("model.safetensors.index.json"), data).expect("write input");
    let _ = gemma_formats::SafetensorsSet::open_folder(&dir);
});
