//! `config.json`: parse, and build what the config implies (RoPE tables,
//! an empty cache) when it parses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(c) = gemma_model::GemmaConfig::from_json(&v) {
        // Keep allocations bounded: only small configs build their cache.
        if c.num_layers() <= 64 && c.layers.iter().all(|l| l.head_dim <= 1024 && l.num_kv_heads <= 64) {
            let _ = gemma_model::KvCache::new(&c, false);
            for l in &c.layers {
                let _ = l.rope_pairs();
            }
        }
    }
});
