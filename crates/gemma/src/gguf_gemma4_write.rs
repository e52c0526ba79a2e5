//! Writing Gemma 4 as llama.cpp's `gemma4` GGUF layout: the metadata its
//! loader requires (per-layer head widths, KV-head counts and FFN widths,
//! the sliding-layer bool array, per-layer-embedding width, experts), the
//! tensors Gemma 1–3 do not have (per-layer embeddings, experts stacked
//! `[E, rows, cols]`, layer output scales, `rope_freqs` for partial RoPE),
//! and its BPE tokenizer with merges. Read back by
//! `gemma_model::gguf` (`gguf_gemma4.rs`).

use gemma_model::gguf_keys as keys;
use gemma_core::{GemmaError, Result};
use gemma_formats::{GgufValue, GgufWriter};
use gemma_model::{AttentionKind, GemmaConfig};
use gemma_tokenizer::GemmaTokenizer;
use std::path::Path;

fn u32v(x: usize) -> GgufValue {
    GgufValue::U32(x as u32)
}

fn i32_array(v: impl Iterator<Item = usize>) -> GgufValue {
    GgufValue::Array(v.map(|x| GgufValue::I32(x as i32)).collect())
}

/// The `gemma4.*` hyperparameters of `c`.
pub(crate) fn metadata(c: &GemmaConfig, w: &mut GgufWriter) -> Result<()> {
    let k = |s: &str| format!("gemma4.{s}");
    let n = c.num_layers();
    let sliding = c.layers.iter().find(|l| l.attention.is_sliding());
    let full = c.layers.iter().find(|l| !l.attention.is_sliding());
    let swa = sliding.or(full).expect("a model has layers");
    let glob = full.unwrap_or(swa);
    w.set(&k(keys::CONTEXT_LENGTH), u32v(c.max_position_embeddings));
    w.set(&k(keys::EMBEDDING_LENGTH), u32v(c.hidden_size));
    w.set(&k(keys::BLOCK_COUNT), u32v(n));
    w.set(&k(keys::HEAD_COUNT), u32v(c.num_heads));
    if c.layers.iter().all(|l| l.num_kv_heads == c.layers[0].num_kv_heads) {
        w.set(&k(keys::HEAD_COUNT_KV), u32v(c.layers[0].num_kv_heads));
    } else {
        w.set(&k(keys::HEAD_COUNT_KV), i32_array(c.layers.iter().map(|l| l.num_kv_heads)));
    }
    if c.layers.iter().all(|l| l.intermediate_size == c.layers[0].intermediate_size) {
        w.set(&k(keys::FEED_FORWARD_LENGTH), u32v(c.layers[0].intermediate_size));
    } else {
        w.set(&k(keys::FEED_FORWARD_LENGTH), i32_array(c.layers.iter().map(|l| l.intermediate_size)));
    }
    w.set(&k(keys::KEY_LENGTH), u32v(glob.head_dim));
    w.set(&k(keys::VALUE_LENGTH), u32v(glob.head_dim));
    w.set(&k(keys::KEY_LENGTH_SWA), u32v(swa.head_dim));
    w.set(&k(keys::VALUE_LENGTH_SWA), u32v(swa.head_dim));
    w.set(&k(keys::ROPE_DIMENSION_COUNT), u32v(glob.head_dim));
    w.set(&k(keys::ROPE_DIMENSION_COUNT_SWA), u32v(2 * swa.rope_pairs()));
    w.set(&k(keys::ROPE_FREQ_BASE), GgufValue::F32(glob.rope_theta as f32));
    w.set(&k(keys::ROPE_FREQ_BASE_SWA), GgufValue::F32(swa.rope_theta as f32));
    if c.layers.iter().any(|l| l.rope_linear_factor != 1.0) {
        return Err(GemmaError::Unsupported("writing a Gemma 4 model with linear RoPE scaling to GGUF".into()));
    }
    let window = c.layers.iter().find_map(|l| match l.attention {
        AttentionKind::Sliding { window } => Some(window),
        AttentionKind::Global => None,
    });
    w.set(&k(keys::SLIDING_WINDOW), u32v(window.unwrap_or(c.max_position_embeddings)));
    w.set(&k(keys::SLIDING_WINDOW_PATTERN), GgufValue::Array(c.layers.iter().map(|l| GgufValue::Bool(l.attention.is_sliding())).collect()));
    w.set(&k(keys::SHARED_KV_LAYERS), u32v(c.layers.iter().filter(|l| l.kv_source.is_some()).count()));
    w.set(&k(keys::PER_LAYER_INPUT_LENGTH), u32v(c.per_layer_input_size));
    w.set(&k(keys::RMS_EPSILON), GgufValue::F32(c.rms_norm_eps));
    // Absent means 30 to llama.cpp; 0 means none.
    w.set(&k(keys::FINAL_SOFTCAP), GgufValue::F32(c.final_softcap.unwrap_or(0.0)));
    if let Some(m) = c.moe {
        w.set(&k(keys::EXPERT_COUNT), u32v(m.experts));
        w.set(&k(keys::EXPERT_USED_COUNT), u32v(m.top_k));
        w.set(&k(keys::EXPERT_FEED_FORWARD_LENGTH), u32v(m.intermediate_size));
    }
    Ok(())
}

/// `rope_freqs.weight` of the full layers: factor 1 on the rotating pairs,
/// 1e30 on the others (llama.cpp's partial RoPE), or None without full layers.
pub(crate) fn rope_freqs(c: &GemmaConfig) -> Option<Vec<f32>> {
    let g = c.layers.iter().find(|l| !l.attention.is_sliding())?;
    Some((0..g.head_dim / 2).map(|i| if i < g.rope_pairs() { 1.0 } else { 1e30 }).collect())
}

/// Gemma 4's tokenizer as llama.cpp's `gemma4` model: the pieces in id
/// order, their types, and the merges of the Hugging Face `tokenizer.json`
/// in `folder`.
pub(crate) fn tokenizer(t: &GemmaTokenizer, folder: &Path, w: &mut GgufWriter) -> Result<()> {
    let path = folder.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| GemmaError::io(&path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(&path, format!("invalid JSON: {e}")))?;
    let merges = json
        .pointer("/model/merges")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| GemmaError::format(&path, "a Gemma 4 tokenizer.json needs BPE `model.merges`"))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) if p.len() == 2 => Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?)),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| GemmaError::format(&path, "`model.merges` entries must be \"a b\" strings or [a, b] pairs"))?;
    let (tokens, types) = crate::quantize::pieces(t);
    let n = tokens.len();
    w.set(keys::TOKENIZER_MODEL, GgufValue::String("gemma4".into()));
    w.set(keys::TOKENIZER_TOKENS, GgufValue::Array(tokens));
    w.set(keys::TOKENIZER_SCORES, GgufValue::Array(vec![GgufValue::F32(0.0); n]));
    w.set(keys::TOKENIZER_TOKEN_TYPE, GgufValue::Array(types));
    w.set(keys::TOKENIZER_MERGES, GgufValue::Array(merges.into_iter().map(GgufValue::String).collect()));
    Ok(())
}
