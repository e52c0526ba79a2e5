//! llama.cpp's `gemma4` GGUF layout: its metadata mapped onto the Hugging
//! Face `Gemma4TextConfig` vocabulary (so [`GemmaConfig::from_json`] checks
//! it), as llama.cpp's converter writes and its loader reads it. Norms hold
//! `w` (not `1 + w`); the per-layer head geometry comes from `key_length`
//! (full layers) and `key_length_swa`, an array `head_count_kv` and
//! `feed_forward_length`; partial RoPE from the `rope_freqs` tensor (1 for
//! rotating pairs, a huge factor for the others).
//!
//! [`GemmaConfig::from_json`]: crate::config::GemmaConfig::from_json

use crate::tensors::{spec, Part, ROPE_FREQS};
use crate::gguf_keys as keys;
use gemma_core::{DType, GemmaError, Result, Storage};
use gemma_formats::{GgufFile, GgufValue};
use serde_json::{json, Map, Value};

/// Per-layer integers: a scalar (every layer) or an array of `n`.
fn per_layer(file: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<u64>>> {
    let bad = || GemmaError::format(&file.path, format!("metadata `{key}` must be a non-negative integer or an array of {n}"));
    match file.get(key) {
        None => Ok(None),
        Some(GgufValue::Array(a)) => {
            let v = a.iter().map(|x| x.as_u64().or_else(|| x.as_bool().map(u64::from))).collect::<Option<Vec<u64>>>().ok_or_else(bad)?;
            if v.len() != n {
                return Err(bad());
            }
            Ok(Some(v))
        }
        Some(v) => Ok(Some(vec![v.as_u64().ok_or_else(bad)?; n])),
    }
}

/// The Hugging Face config a `gemma4` GGUF file implies.
pub(crate) fn config_json(file: &GgufFile) -> Result<Value> {
    let key = |k: &str| format!("gemma4.{k}");
    let need = |k: &str| -> Result<u64> {
        file.get(&key(k)).and_then(GgufValue::as_u64).ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{}` is missing or not an integer", key(k))))
    };
    let float = |k: &str| file.get(&key(k)).and_then(GgufValue::as_f64);
    let embd_name = spec(Part::Embed).gguf;
    let embd = file.tensor(embd_name).ok_or_else(|| GemmaError::MissingTensor { name: embd_name.into() })?;
    let vocab = *embd.dims.get(1).ok_or_else(|| GemmaError::format(&file.path, "token_embd.weight is not a matrix"))?;
    let n = need(keys::BLOCK_COUNT)? as usize;
    let mut c = Map::new();
    c.insert("architectures".into(), json!(["Gemma4ForCausalLM"]));
    c.insert("vocab_size".into(), json!(vocab));
    let hidden = need(keys::EMBEDDING_LENGTH)?;
    c.insert("hidden_size".into(), json!(hidden));
    // GGUF keeps no `use_bidirectional_attention`: llama.cpp's rule
    // (tools/mtmd/mtmd.cpp at 0c1e570, the llama.cpp of llama-cpp-python
    // 0.3.36) decodes images non-causally except at the E2B/E4B widths
    // (1536, 2560), whose configs leave the field unset. With it we apply
    // transformers' mask: both ways within an image on the sliding layers.
    if hidden != 1536 && hidden != 2560 {
        c.insert("use_bidirectional_attention".into(), json!("vision"));
    }
    c.insert("num_hidden_layers".into(), json!(n));
    c.insert("num_attention_heads".into(), json!(need(keys::HEAD_COUNT)?));
    c.insert("max_position_embeddings".into(), json!(need(keys::CONTEXT_LENGTH)?));
    c.insert("sliding_window".into(), json!(need(keys::SLIDING_WINDOW)?));
    c.insert("rms_norm_eps".into(), json!(float(keys::RMS_EPSILON).unwrap_or(1e-6)));
    // Layer types: the bool array (true = sliding).
    let swa = per_layer(file, &key(keys::SLIDING_WINDOW_PATTERN), n)?
        .ok_or_else(|| GemmaError::format(&file.path, "metadata `gemma4.attention.sliding_window_pattern` is missing"))?;
    let sliding: Vec<bool> = swa.iter().map(|&s| s != 0).collect();
    c.insert("layer_types".into(), json!(sliding.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>()));
    // Head geometry: key_length is the full layers', key_length_swa the sliding ones'.
    let hd_swa = need(keys::KEY_LENGTH_SWA)?;
    let hd_full = file.get(&key(keys::KEY_LENGTH)).and_then(GgufValue::as_u64).unwrap_or(hd_swa);
    for (k, v) in [(keys::VALUE_LENGTH, hd_full), (keys::VALUE_LENGTH_SWA, hd_swa)] {
        if file.get(&key(k)).and_then(GgufValue::as_u64).is_some_and(|x| x != v) {
            return Err(GemmaError::Unsupported(format!("{}: value and key head widths differ", key(k))));
        }
    }
    c.insert("head_dim".into(), json!(hd_swa));
    if hd_full != hd_swa {
        c.insert("global_head_dim".into(), json!(hd_full));
    }
    let kv = per_layer(file, &key(keys::HEAD_COUNT_KV), n)?.unwrap_or_else(|| vec![need(keys::HEAD_COUNT).unwrap_or(1); n]);
    let kv_of = |want_sliding: bool| (0..n).find(|&l| sliding[l] == want_sliding).map(|l| kv[l]);
    c.insert("num_key_value_heads".into(), json!(kv_of(true).or(kv_of(false)).unwrap_or(1)));
    let shared = file.get(&key(keys::SHARED_KV_LAYERS)).and_then(GgufValue::as_u64).unwrap_or(0) as usize;
    c.insert("num_kv_shared_layers".into(), json!(shared));
    // Full layers without a value projection use the keys (attention_k_eq_v).
    let own = n.saturating_sub(shared);
    let k_eq_v = (0..own).filter(|&l| !sliding[l]).any(|l| file.tensor(&spec(Part::V).gguf_name(l)).is_none());
    if k_eq_v {
        c.insert("attention_k_eq_v".into(), json!(true));
        if let Some(g) = kv_of(false) {
            c.insert("num_global_key_value_heads".into(), json!(g));
        }
    } else if kv_of(false).is_some_and(|g| Some(g) != kv_of(true)) {
        return Err(GemmaError::Unsupported("gemma4 GGUF: full layers with their own KV-head count and a value projection".into()));
    }
    // Feed-forward widths: one, or twice as wide on the KV-sharing layers (use_double_wide_mlp).
    let ff = per_layer(file, &key(keys::FEED_FORWARD_LENGTH), n)?.ok_or_else(|| GemmaError::format(&file.path, "metadata `gemma4.feed_forward_length` is missing"))?;
    c.insert("intermediate_size".into(), json!(ff[0]));
    if ff.iter().any(|&f| f != ff[0]) {
        let double = (0..n).all(|l| ff[l] == if l >= own { 2 * ff[0] } else { ff[0] });
        if !double {
            return Err(GemmaError::Unsupported(format!("gemma4 GGUF: feed-forward widths {ff:?} are neither uniform nor double-wide on the shared layers")));
        }
        c.insert("use_double_wide_mlp".into(), json!(true));
    }
    // Per-layer embeddings.
    let p = need(keys::PER_LAYER_INPUT_LENGTH)?;
    c.insert("hidden_size_per_layer_input".into(), json!(p));
    if p > 0 {
        let name = spec(Part::PleEmbed).gguf;
        let t = file.tensor(name).ok_or_else(|| GemmaError::MissingTensor { name: name.into() })?;
        c.insert("vocab_size_per_layer_input".into(), json!(t.dims.get(1).copied().unwrap_or(0)));
    }
    // RoPE: sliding and full bases; the full layers' rotating fraction from rope_freqs.
    let partial = match file.tensor(ROPE_FREQS) {
        None => 1.0,
        Some(t) => {
            let mut f = vec![0f32; t.elements() as usize];
            let st = Storage::Raw { dtype: t.dtype, len: f.len(), bytes: file.tensor_bytes(t) };
            if t.dtype != DType::F32 {
                return Err(GemmaError::format(&file.path, "rope_freqs.weight must be f32"));
            }
            gemma_quant::read_f32(&st, 0, &mut f);
            let ones = f.iter().take_while(|&&x| x == 1.0).count();
            if f[ones..].iter().any(|&x| x < 1e20) {
                return Err(GemmaError::Unsupported("gemma4 GGUF: rope_freqs other than partial rotation (1 then very large factors)".into()));
            }
            2.0 * ones as f64 / hd_full as f64
        }
    };
    let full = if partial < 1.0 {
        json!({"rope_type": "proportional", "partial_rotary_factor": partial, "rope_theta": float(keys::ROPE_FREQ_BASE).unwrap_or(1e6)})
    } else {
        json!({"rope_type": "default", "rope_theta": float(keys::ROPE_FREQ_BASE).unwrap_or(1e6)})
    };
    c.insert("rope_parameters".into(), json!({"sliding_attention": {"rope_type": "default", "rope_theta": float(keys::ROPE_FREQ_BASE_SWA).unwrap_or(1e4)}, "full_attention": full}));
    // llama.cpp caps at 30 when the key is absent; 0 means none.
    let cap = float(keys::FINAL_SOFTCAP).unwrap_or(30.0);
    c.insert("final_logit_softcapping".into(), if cap > 0.0 { json!(cap) } else { Value::Null });
    if let Some(e) = file.get(&key(keys::EXPERT_COUNT)).and_then(GgufValue::as_u64).filter(|&e| e > 0) {
        c.insert("enable_moe_block".into(), json!(true));
        c.insert("num_experts".into(), json!(e));
        c.insert("top_k_experts".into(), json!(need(keys::EXPERT_USED_COUNT)?));
        c.insert("moe_intermediate_size".into(), json!(need(keys::EXPERT_FEED_FORWARD_LENGTH)?));
    }
    crate::gguf::head_and_special_tokens(file, &mut c);
    Ok(Value::Object(c))
}
