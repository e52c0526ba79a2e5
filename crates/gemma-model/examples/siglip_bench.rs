//! Encode time of one image on the published Gemma 3 vision shape (SigLIP
//! so400m at 896×896: 27 blocks of width 1152, 4096 patches → 256 soft
//! tokens of width 2560, the 4B's), random bf16 weights (speed does not
//! need trained ones):
//! `cargo run --release -p gemma-model --example siglip_bench [THREADS]`.

use gemma_core::Storage;
use gemma_model::towers::{SiglipConfig, SiglipTower};
use std::time::Instant;

fn main() {
    if let Some(t) = std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        gemma_kernels::pool::set_threads(t);
    }
    let layers = std::env::var("LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(27);
    let cfg = SiglipConfig { hidden_size: 1152, intermediate_size: 4304, num_hidden_layers: layers, num_attention_heads: 16, image_size: 896, patch_size: 14, ..Default::default() };
    // Each tensor the loader asks for, as random bf16 values of its shape.
    let state = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15u64);
    let source = |name: &str| -> gemma_core::Result<(Vec<usize>, Storage)> {
        let shape = shape_of(name, &cfg);
        let vals = (0..shape.iter().product::<usize>())
            .map(|_| {
                let mut s = state.get();
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                state.set(s);
                half::bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04)
            })
            .collect();
        Ok((shape, Storage::BF16(vals)))
    };
    let t0 = Instant::now();
    let tower = SiglipTower::load(cfg.clone(), 256, 2560, "vision_tower.", &source).expect("tower");
    eprintln!("built a random bf16 tower in {:.1}s", t0.elapsed().as_secs_f64());
    let pixels: Vec<f32> = (0..3 * 896 * 896).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
    for round in 0..2 {
        let t = Instant::now();
        let out = tower.encode(&pixels).expect("encode");
        println!(
            "round {round}: one 896×896 image → {} soft tokens in {:.2}s on {} threads (random weights: speed only)",
            out.len() / 2560,
            t.elapsed().as_secs_f64(),
            gemma_kernels::pool::global().threads()
        );
    }
}

/// The shape the loader asks for under `name`.
fn shape_of(name: &str, c: &SiglipConfig) -> Vec<usize> {
    let (h, ff, p) = (c.hidden_size, c.intermediate_size, c.patch_size);
    if name.ends_with("patch_embedding.weight") {
        vec![h, 3, p, p]
    } else if name.ends_with("position_embedding.weight") {
        vec![(c.image_size / p).pow(2), h]
    } else if name.ends_with("mm_input_projection_weight") {
        vec![h, 2560]
    } else if name.contains("fc1.weight") {
        vec![ff, h]
    } else if name.contains("fc1.bias") {
        vec![ff]
    } else if name.contains("fc2.weight") {
        vec![h, ff]
    } else if name.ends_with(".weight") && name.contains("self_attn") {
        vec![h, h]
    } else {
        vec![h]
    }
}
