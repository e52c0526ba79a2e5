//! Writing Gemma 3n as llama.cpp's `gemma3n` GGUF layout: the keys its
//! converter writes (llama.cpp hard-codes most of them: see
//! `gemma_model`'s `gguf_gemma3n.rs`). The tensors are written by
//! `quantize.rs`; the tokenizer is SentencePiece as for Gemma 3.

use gemma_model::gguf_keys as keys;
use gemma_core::Result;
use gemma_formats::{GgufValue, GgufWriter};
use gemma_model::{AttentionKind, GemmaConfig};

fn u32v(x: usize) -> GgufValue {
    GgufValue::U32(x as u32)
}

/// The `gemma3n.*` hyperparameters of `c`.
pub(crate) fn metadata(c: &GemmaConfig, w: &mut GgufWriter) -> Result<()> {
    let k = |s: &str| format!("gemma3n.{s}");
    let n = c.num_layers();
    let a = c.altup.expect("Gemma 3n has AltUp");
    w.set(&k(keys::CONTEXT_LENGTH), u32v(c.max_position_embeddings));
    w.set(&k(keys::EMBEDDING_LENGTH), u32v(c.hidden_size));
    w.set(&k(keys::BLOCK_COUNT), u32v(n));
    w.set(&k(keys::FEED_FORWARD_LENGTH), GgufValue::Array(c.layers.iter().map(|l| GgufValue::I32(l.intermediate_size as i32)).collect()));
    w.set(&k(keys::HEAD_COUNT), u32v(c.num_heads));
    w.set(&k(keys::HEAD_COUNT_KV), u32v(c.num_kv_heads));
    w.set(&k(keys::KEY_LENGTH), u32v(c.head_dim));
    w.set(&k(keys::VALUE_LENGTH), u32v(c.head_dim));
    w.set(&k(keys::RMS_EPSILON), GgufValue::F32(c.rms_norm_eps));
    let window = c.layers.iter().find_map(|l| match l.attention {
        AttentionKind::Sliding { window } => Some(window),
        AttentionKind::Global => None,
    });
    w.set(&k(keys::SLIDING_WINDOW), u32v(window.unwrap_or(c.max_position_embeddings)));
    w.set(&k(keys::SLIDING_WINDOW_PATTERN), GgufValue::Array(c.layers.iter().map(|l| GgufValue::Bool(l.attention.is_sliding())).collect()));
    if let Some(g) = c.layers.iter().find(|l| !l.attention.is_sliding()) {
        w.set(&k(keys::ROPE_FREQ_BASE), GgufValue::F32(g.rope_theta as f32));
    }
    if let Some(s) = c.layers.iter().find(|l| l.attention.is_sliding()) {
        w.set(&k(keys::ROPE_FREQ_BASE_SWA), GgufValue::F32(s.rope_theta as f32));
    }
    w.set(&k(keys::FINAL_SOFTCAP), GgufValue::F32(c.final_softcap.unwrap_or(0.0)));
    w.set(&k(keys::ALTUP_ACTIVE_IDX), u32v(a.active));
    w.set(&k(keys::ALTUP_NUM_INPUTS), u32v(a.streams));
    w.set(&k(keys::PER_LAYER_INPUT_LENGTH), u32v(c.per_layer_input_size));
    w.set(&k(keys::SHARED_KV_LAYERS), u32v(c.layers.iter().filter(|l| l.kv_source.is_some()).count()));
    // The normal quantile of each layer's sparsity (−∞: none), as llama.cpp's converter writes it.
    w.set(&k(keys::ACTIVATION_SPARSITY_SCALE), GgufValue::Array(c.layers.iter().map(|l| GgufValue::F32(l.gate_sparsity_k.unwrap_or(f32::NEG_INFINITY))).collect()));
    Ok(())
}
