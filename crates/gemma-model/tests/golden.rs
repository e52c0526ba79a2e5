//! Golden tests: logits and greedy ids against transformers, for the tiny
//! random Gemma 1/2/3 checkpoints made by tools/reference/make_tiny_gemmas.py.

use gemma_formats::SafetensorsSet;
use gemma_model::{hf::load_model, KvCache, LogitsMode, Model};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn load(name: &str) -> (Model, SafetensorsSet) {
    let dir = testdata(name);
    let model = load_model(&dir, None, &mut |_, _| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
    let goldens = SafetensorsSet::open_files(&[dir.join("goldens.safetensors")]).unwrap();
    (model, goldens)
}

fn ids(g: &SafetensorsSet, name: &str) -> Vec<u32> {
    g.load_i64(name).unwrap().into_iter().map(|x| x as u32).collect()
}

/// Max |ours - golden| over all positions of all golden sequences, and
/// whether the argmax agrees wherever the golden top-2 margin exceeds `margin`.
fn max_logit_diff(name: &str, margin: f32) -> f32 {
    let (model, g) = load(name);
    let vocab = model.config.vocab_size;
    let mut worst = 0f32;
    let mut k = 0;
    while g.info(&format!("seq{k}.ids")).is_some() {
        let toks = ids(&g, &format!("seq{k}.ids"));
        let want = gemma_quant::to_f32_vec(&g.load(&format!("seq{k}.logits")).unwrap().1);
        let mut cache = model.new_cache();
        let got = model.forward(&toks, &mut cache, LogitsMode::All).unwrap();
        assert_eq!(got.len(), want.len());
        for (t, (gr, wr)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
            for (a, b) in gr.iter().zip(wr) {
                worst = worst.max((a - b).abs());
            }
            let mut sorted: Vec<f32> = wr.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > margin {
                assert_eq!(argmax(gr), argmax(wr), "{name} seq{k} position {t}: argmax differs");
            }
        }
        k += 1;
    }
    assert!(k >= 5, "{name}: expected at least 5 golden sequences");
    eprintln!("{name}: max |logit diff| = {worst:.3e} over {k} sequences");
    worst
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

/// f32 checkpoints: the same math in the same precision; 1e-4 absolute.
const F32_TOL: f32 = 1e-4;
/// bf16 checkpoints: transformers computes in bf16 (8-bit mantissa: every
/// intermediate and the logits themselves are rounded), we compute in f32 from
/// the same bf16 weights. The tiny models' logits reach magnitude 4–8, where
/// one bf16 ULP is 2^-5 = 0.031; the measured worst case is 0.17 (≈ 5 ULPs,
/// Gemma 1 with no final softcap). The tolerance is 10 ULPs at that magnitude.
const BF16_TOL: f32 = 0.32;
/// f16 checkpoints: 11-bit mantissa, ULP 2^-8 = 0.0039 at magnitude 4–8;
/// measured worst case 0.016 (≈ 4 ULPs); tolerance 10 ULPs.
const F16_TOL: f32 = 0.04;

#[test]
fn gemma1_f32_logits_match_transformers() {
    assert!(max_logit_diff("tiny-gemma1", 0.0) < F32_TOL);
}

#[test]
fn gemma2_f32_logits_match_transformers() {
    assert!(max_logit_diff("tiny-gemma2", 0.0) < F32_TOL);
}

#[test]
fn gemma3_f32_logits_match_transformers() {
    assert!(max_logit_diff("tiny-gemma3", 0.0) < F32_TOL);
}

#[test]
fn gemma3_multimodal_sharded_checkpoint_matches_text_model() {
    assert!(max_logit_diff("tiny-gemma3-mm-sharded", 0.0) < F32_TOL);
}

#[test]
fn gemma1_bf16_logits_within_tolerance() {
    assert!(max_logit_diff("tiny-gemma1-bf16", 2.0 * BF16_TOL) < BF16_TOL);
}

#[test]
fn gemma2_bf16_logits_within_tolerance() {
    assert!(max_logit_diff("tiny-gemma2-bf16", 2.0 * BF16_TOL) < BF16_TOL);
}

#[test]
fn gemma3_bf16_logits_within_tolerance() {
    assert!(max_logit_diff("tiny-gemma3-bf16", 2.0 * BF16_TOL) < BF16_TOL);
}

#[test]
fn gemma3_f16_logits_within_tolerance() {
    assert!(max_logit_diff("tiny-gemma3-f16", 2.0 * F16_TOL) < F16_TOL);
}

/// Greedy decoding with the cache, one token per step, gives transformers' ids.
fn greedy_matches(name: &str) {
    let (model, g) = load(name);
    let mut k = 0;
    while g.info(&format!("greedy.{k}.prompt")).is_some() {
        let prompt = ids(&g, &format!("greedy.{k}.prompt"));
        let want = ids(&g, &format!("greedy.{k}.ids"));
        let mut cache = model.new_cache();
        let mut logits = model.forward(&prompt, &mut cache, LogitsMode::Last).unwrap();
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let next = argmax(&logits) as u32;
            got.push(next);
            logits = model.forward(&[next], &mut cache, LogitsMode::Last).unwrap();
        }
        assert_eq!(got, want, "{name}: greedy continuation {k} differs");
        k += 1;
    }
    assert!(k >= 2);
}

#[test]
fn greedy_ids_identical_gemma1() {
    greedy_matches("tiny-gemma1");
}

#[test]
fn greedy_ids_identical_gemma2() {
    greedy_matches("tiny-gemma2");
}

#[test]
fn greedy_ids_identical_gemma3() {
    greedy_matches("tiny-gemma3");
}

#[test]
fn greedy_ids_identical_gemma4() {
    greedy_matches("tiny-gemma4");
    greedy_matches("tiny-gemma4-moe");
}

/// Cached decoding in steps of every size equals one full forward, also far
/// past the sliding window (where the ring buffer wraps), within `tol`.
fn cached_matches_full(name: &str, tol: f32) {
    let (model, g) = load(name);
    let toks = ids(&g, "seq5.ids");
    let vocab = model.config.vocab_size;
    let full = model.forward(&toks, &mut model.new_cache(), LogitsMode::All).unwrap();
    for step in [1, 3, 7] {
        let mut cache: KvCache = model.new_cache();
        let mut got = Vec::new();
        for c in toks.chunks(step) {
            got.extend(model.forward(c, &mut cache, LogitsMode::All).unwrap());
        }
        let worst = got.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{name} step {step}: {worst:.2e}");
        assert!(worst < tol, "{name} step {step}: {worst}");
        assert_eq!(got.len(), toks.len() * vocab);
    }
}

#[test]
fn cached_steps_equal_full_forward() {
    // Decode and prefill kernels round differently (decode's dot products
    // sum in 8 lanes, prefill's broadcast GEMM each output in order): up to
    // ~5e-5 on these logits.
    for name in ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma4-unified"] {
        cached_matches_full(name, 1e-4);
    }
}

/// Gemma 4 (an "E" model: per-layer embeddings, KV sharing inside the
/// sequences, double-wide MLP, partial RoPE, two head geometries).
#[test]
fn gemma4_f32_logits_match_transformers() {
    // Final softcap 3 squeezes the logits into [-3, 3]: near-ties within the
    // f32 noise (~1e-5) are not argmax disagreements.
    assert!(max_logit_diff("tiny-gemma4", 1e-3) < F32_TOL);
}

#[test]
fn gemma4_unified_f32_logits_match_transformers() {
    // The 12B's architecture (Gemma4UnifiedForCausalLM): k_eq_v full layers with one global KV head.
    assert!(max_logit_diff("tiny-gemma4-unified", 1e-3) < F32_TOL);
    greedy_matches("tiny-gemma4-unified");
}

/// Gemma 4 MoE (26B-A4B-like: k_eq_v full layers, experts beside the MLP).
#[test]
fn gemma4_moe_f32_logits_match_transformers() {
    assert!(max_logit_diff("tiny-gemma4-moe", 1e-3) < F32_TOL);
}

/// `Gemma4ForConditionalGeneration` with a vision tower: the text part
/// loads (from `model.language_model.`), the towers are noted and skipped.
#[test]
fn gemma4_multimodal_checkpoint_loads_its_text_part() {
    assert!(max_logit_diff("tiny-gemma4-mm", 1e-3) < F32_TOL);
    let (model, _) = load("tiny-gemma4-mm");
    assert!(model.config.has_towers);
    assert_eq!(model.config.architecture, "Gemma4ForConditionalGeneration");
}

/// Gemma 3n (AltUp streams, LAuReL, activation sparsity on the first two
/// layers, per-layer embeddings over a table shorter than the vocabulary,
/// KV sharing inside the sequences, per-layer FFN widths).
#[test]
fn gemma3n_f32_logits_match_transformers() {
    assert!(max_logit_diff("tiny-gemma3n", 1e-3) < F32_TOL);
    let (model, _) = load("tiny-gemma3n");
    let c = &model.config;
    assert_eq!(c.family, gemma_model::Family::Gemma3n);
    assert!(c.layers[0].gate_sparsity_k.is_some() && c.layers[2].gate_sparsity_k.is_none());
    assert_eq!(c.layers.iter().map(|l| l.intermediate_size).collect::<Vec<_>>(), [64, 64, 96, 64, 80, 64]);
    assert_eq!(c.layers[4].kv_source, Some(3));
    assert_eq!(c.layers[5].kv_source, Some(2));
}

/// The text part of a `Gemma3nForConditionalGeneration` layout.
#[test]
fn gemma3n_multimodal_layout_loads_its_text_part() {
    assert!(max_logit_diff("tiny-gemma3n-mm", 1e-3) < F32_TOL);
}

#[test]
fn greedy_ids_identical_gemma3n() {
    greedy_matches("tiny-gemma3n");
}

#[test]
fn cached_steps_equal_full_forward_gemma3n() {
    // This model amplifies f32 rounding more than the others (transformers'
    // own f32 logits differ from its f64 ones by up to 4.7e-5): F32_TOL.
    cached_matches_full("tiny-gemma3n", F32_TOL);
}


/// Flax checkpoints (transformers 4.x FlaxGemmaForCausalLM goldens), single
/// file and sharded; a folder with both kinds loads its safetensors.
#[test]
fn flax_checkpoints_match_flax_transformers() {
    assert!(max_logit_diff("tiny-gemma-flax", 1e-3) < F32_TOL);
    assert!(max_logit_diff("tiny-gemma-flax-sharded", 1e-3) < F32_TOL);
    greedy_free_check("tiny-gemma-flax");
    // tiny-gemma1's safetensors beside other Flax weights: tiny-gemma1's goldens hold.
    assert!(max_logit_diff("tiny-gemma-flax-both", 1e-3) < F32_TOL);
}

/// The Flax fixtures have no greedy goldens: cached steps equal the full forward.
fn greedy_free_check(name: &str) {
    let (model, g) = load(name);
    let toks = ids(&g, "seq5.ids");
    let full = model.forward(&toks, &mut model.new_cache(), LogitsMode::All).unwrap();
    let mut cache = model.new_cache();
    let mut got = Vec::new();
    for c in toks.chunks(3) {
        got.extend(model.forward(c, &mut cache, LogitsMode::All).unwrap());
    }
    assert!(got.iter().zip(&full).all(|(a, b)| (a - b).abs() < 3e-5));
}

#[test]
fn config_parameter_counts_equal_the_loaded_weights() {
    // What `gemma inspect --variants` computes from configs alone.
    for name in [
        "tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma3-mm-sharded", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma4-unified",
        "tiny-gemma4-mm", "tiny-gemma3n", "tiny-gemma3n-mm", "tiny-embeddinggemma", "tiny-gemma2-bf16",
    ] {
        let model = load_model(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name), None, &mut |_, _| {}).unwrap();
        assert_eq!(model.config.parameter_count(), model.weights.parameter_count(), "{name}");
    }
}
