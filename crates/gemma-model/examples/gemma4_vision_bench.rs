//! Encode time of one image on the published Gemma 4 vision shape (16
//! blocks of width 768, 12 heads of 64, MLP 3072, 16-pixel patches pooled
//! 3×3; a 960×672 image is exactly the default 280-token budget: 2520
//! patches, no resize here nor in llama.cpp), random bf16 weights (speed
//! does not need trained ones), the embedder projecting to width 48 (the
//! tiny fixture's text model, so llama.cpp's libmtmd can load the pair):
//! `cargo run --release -p gemma-model --example gemma4_vision_bench [THREADS]`.
//! `BUDGET=560` or `1120` times those budgets instead (1344×960 and
//! 1920×1344 images, exactly their budgets).
//!
//! With `MMPROJ=FILE` the tower comes from llama.cpp's mmproj file (written
//! there first when it does not exist: f16 matrices, or bf16 with
//! `MMPROJ_TYPE=bf16`); with `OUT=PREFIX` the image and its soft tokens are
//! written for tools/reference/mtmd_embeddings.py.

#[path = "bench_common/mod.rs"]
mod bench_common;

use gemma_core::Storage;
use gemma_model::towers::{Gemma4VisionConfig, Gemma4VisionTower, TowerInput, VisionTower};
use std::time::Instant;

/// Width of the text model the soft tokens feed.
const TEXT_HIDDEN: usize = 48;

fn main() {
    if let Some(t) = std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        gemma_kernels::pool::set_threads(t);
    }
    let layers = std::env::var("LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let cfg = Gemma4VisionConfig { num_hidden_layers: layers, ..Default::default() };
    let state = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15u64);
    let source = |name: &str| -> gemma_core::Result<(Vec<usize>, Storage)> {
        let shape = shape_of(name, &cfg);
        let s = bench_common::random_bf16(&shape, &state);
        Ok((shape, s))
    };
    let t0 = Instant::now();
    let mut tower = VisionTower::Gemma4(Gemma4VisionTower::load(cfg.clone(), TEXT_HIDDEN, "model.vision_tower.", "model.embed_vision.", &source).expect("tower"));
    eprintln!("built a random bf16 tower in {:.1}s", t0.elapsed().as_secs_f64());
    if let Ok(path) = std::env::var("MMPROJ") {
        let path = std::path::PathBuf::from(path);
        if !path.exists() {
            let VisionTower::Gemma4(t) = &tower else { unreachable!("built as Gemma 4") };
            let (kv, tensors) = gemma_model::towers::mmproj_gemma4::export(t);
            bench_common::write_mmproj(&path, kv, tensors, bench_common::mmproj_type());
        }
        let file = gemma_formats::GgufFile::open(&path).expect("open the mmproj file");
        tower = gemma_model::towers::mmproj_gemma4::load(&file, TEXT_HIDDEN, (0, 1, 2), 280).expect("load the mmproj file").1;
        eprintln!("the tower from {}", path.display());
    }
    let budget: usize = std::env::var("BUDGET").ok().and_then(|v| v.parse().ok()).unwrap_or(280);
    let (w, h) = match budget {
        560 => (1344, 960),
        1120 => (1920, 1344),
        _ => (960, 672),
    };
    let budget = w * h / (48 * 48);
    let rgb = bench_common::test_image(w, h);
    let input = gemma_model::towers::preprocess::gemma4_patches(&rgb, cfg.patch_size, budget, cfg.pooling_kernel_size).expect("preprocess");
    assert_eq!(input.positions.len(), budget * 9, "the image is exactly the budget");
    eprintln!("{w}x{h}: {} patches, {budget} soft tokens", input.positions.len());
    let input = TowerInput::Patches(input);
    bench_common::time_rounds(&rgb, TEXT_HIDDEN, &|| tower.encode(&input).expect("encode"));
}

/// The shape the loader asks for under `name`.
fn shape_of(name: &str, c: &Gemma4VisionConfig) -> Vec<usize> {
    let (h, ff, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
    if name.ends_with("input_proj.weight") {
        vec![h, c.patch_values()]
    } else if name.ends_with("position_embedding_table") {
        vec![2, c.position_embedding_size, h]
    } else if name.ends_with("embedding_projection.weight") {
        vec![TEXT_HIDDEN, h]
    } else if name.contains("gate_proj") || name.contains("up_proj") {
        vec![ff, h]
    } else if name.contains("down_proj") {
        vec![h, ff]
    } else if name.contains("q_norm") || name.contains("k_norm") {
        vec![hd]
    } else if name.contains("_proj") {
        vec![h, h]
    } else {
        vec![h]
    }
}
