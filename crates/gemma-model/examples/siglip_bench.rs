//! Encode time of one image on the published Gemma 3 vision shape (SigLIP
//! so400m at 896×896: 27 blocks of width 1152, 4096 patches → 256 soft
//! tokens of width 2560, the 4B's), random bf16 weights (speed does not
//! need trained ones):
//! `cargo run --release -p gemma-model --example siglip_bench [THREADS]`.
//!
//! With `MMPROJ=FILE` the tower comes from llama.cpp's mmproj file (written
//! there first, f16 matrices as llama.cpp's converter writes them, or bf16
//! with `MMPROJ_TYPE=bf16`, when the file does not exist), so llama.cpp's
//! libmtmd can time the same weights;
//! with `OUT=PREFIX` the test image is written as `PREFIX.rgb` and its soft
//! tokens as `PREFIX.f32` (what tools/reference/mtmd_embeddings.py reads).

#[path = "bench_common/mod.rs"]
mod bench_common;

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
        let s = bench_common::random_bf16(&shape, &state);
        Ok((shape, s))
    };
    let t0 = Instant::now();
    let mut tower = SiglipTower::load(cfg.clone(), 256, 2560, "vision_tower.", &source).expect("tower");
    eprintln!("built a random bf16 tower in {:.1}s", t0.elapsed().as_secs_f64());
    if let Ok(path) = std::env::var("MMPROJ") {
        let path = std::path::PathBuf::from(path);
        if !path.exists() {
            let (kv, tensors) = gemma_model::towers::mmproj::export(&tower);
            bench_common::write_mmproj(&path, kv, tensors, bench_common::mmproj_type());
        }
        let file = gemma_formats::GgufFile::open(&path).expect("open the mmproj file");
        let (_, loaded) = gemma_model::towers::mmproj::load(&file, 2560, (0, 1, 2)).expect("load the mmproj file");
        let gemma_model::towers::VisionTower::Siglip(t) = loaded else { panic!("an mmproj file loads as SigLIP") };
        tower = t;
        eprintln!("the tower from {}", path.display());
    }
    // A smooth 896×896 test image, preprocessed as Gemma 3's processor does (no resize at this size).
    let rgb = bench_common::test_image(896, 896);
    let pixels = gemma_model::towers::preprocess::gemma3_pixels(&rgb, 896);
    bench_common::time_rounds(&rgb, 2560, &|| tower.encode(&pixels).expect("encode"));
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
