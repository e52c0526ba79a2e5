//! llama.cpp's `gemma3n` GGUF layout mapped onto the Hugging Face
//! `Gemma3nTextConfig` vocabulary. llama.cpp itself hard-codes much of the
//! architecture (4 AltUp streams, active stream 0, per-layer width 256,
//! LAuReL rank 64, sparsity 0.95 on the first 10 layers, the first 20
//! layers owning their KV, sliding period 5, softcap 30); we read the keys
//! its converter writes when present and fall back to those constants.
//! `activation_sparsity_scale` holds the normal quantile of each layer's
//! sparsity (−∞ for none), mapped back to the sparsity here. Norms hold `w`.

use crate::tensors::{spec, Part};
use crate::gguf_keys as keys;
use gemma_core::{GemmaError, Result};
use gemma_formats::{GgufFile, GgufValue};
use serde_json::{json, Map, Value};

/// The Hugging Face config a `gemma3n` GGUF file implies.
pub(crate) fn config_json(file: &GgufFile) -> Result<Value> {
    let key = |k: &str| format!("gemma3n.{k}");
    let need = |k: &str| -> Result<u64> {
        file.get(&key(k)).and_then(GgufValue::as_u64).ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{}` is missing or not an integer", key(k))))
    };
    let int = |k: &str| file.get(&key(k)).and_then(GgufValue::as_u64);
    let float = |k: &str| file.get(&key(k)).and_then(GgufValue::as_f64);
    let array = |k: &str| file.get(&key(k)).and_then(GgufValue::as_array);
    let tensor_rows = |name: &str| file.tensor(name).and_then(|t| t.dims.get(1).copied());
    let vocab = tensor_rows(spec(Part::Embed).gguf).ok_or_else(|| GemmaError::MissingTensor { name: spec(Part::Embed).gguf.into() })?;
    let n = need(keys::BLOCK_COUNT)? as usize;
    let mut c = Map::new();
    c.insert("architectures".into(), json!(["Gemma3nForCausalLM"]));
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("hidden_size".into(), json!(need(keys::EMBEDDING_LENGTH)?));
    c.insert("num_hidden_layers".into(), json!(n));
    let heads = need(keys::HEAD_COUNT)?;
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_key_value_heads".into(), json!(int(keys::HEAD_COUNT_KV).unwrap_or(heads)));
    c.insert("head_dim".into(), json!(need(keys::KEY_LENGTH)?));
    c.insert("max_position_embeddings".into(), json!(need(keys::CONTEXT_LENGTH)?));
    c.insert("sliding_window".into(), json!(need(keys::SLIDING_WINDOW)?));
    c.insert("rms_norm_eps".into(), json!(float(keys::RMS_EPSILON).unwrap_or(1e-6)));
    let ff: Vec<u64> = match array(keys::FEED_FORWARD_LENGTH) {
        Some(a) => a.iter().map(GgufValue::as_u64).collect::<Option<Vec<u64>>>().filter(|v| v.len() == n),
        None => int(keys::FEED_FORWARD_LENGTH).map(|f| vec![f; n]),
    }
    .ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{}` must be an integer or an array of {n}", key(keys::FEED_FORWARD_LENGTH))))?;
    c.insert("intermediate_size".into(), json!(ff));
    // Layer types: the converter's bool array, else llama.cpp's period of 5.
    let sliding: Vec<bool> = match array(keys::SLIDING_WINDOW_PATTERN) {
        Some(a) if a.len() == n => a.iter().map(|v| v.as_bool().or_else(|| v.as_u64().map(|x| x != 0)).unwrap_or(true)).collect(),
        _ => (0..n).map(|i| (i + 1) % 5 != 0).collect(),
    };
    c.insert("layer_types".into(), json!(sliding.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>()));
    c.insert("rope_parameters".into(), json!({
        "sliding_attention": {"rope_type": "default", "rope_theta": float(keys::ROPE_FREQ_BASE_SWA).unwrap_or(1e4)},
        "full_attention": {"rope_type": "default", "rope_theta": float(keys::ROPE_FREQ_BASE).unwrap_or(1e6)}}));
    c.insert("num_kv_shared_layers".into(), json!(int(keys::SHARED_KV_LAYERS).unwrap_or(n.saturating_sub(20) as u64)));
    c.insert("altup_num_inputs".into(), json!(int(keys::ALTUP_NUM_INPUTS).unwrap_or(4)));
    c.insert("altup_active_idx".into(), json!(int(keys::ALTUP_ACTIVE_IDX).unwrap_or(0)));
    c.insert("hidden_size_per_layer_input".into(), json!(int(keys::PER_LAYER_INPUT_LENGTH).unwrap_or(256)));
    c.insert("vocab_size_per_layer_input".into(), json!(tensor_rows(spec(Part::PleEmbed).gguf).unwrap_or(vocab)));
    let rank = file.tensor(&spec(Part::LaurelLeft).gguf_name(0)).and_then(|t| t.dims.get(1).copied()).unwrap_or(64);
    c.insert("laurel_rank".into(), json!(rank));
    let sparsity: Vec<f64> = match array(keys::ACTIVATION_SPARSITY_SCALE) {
        Some(a) if a.len() == n => a
            .iter()
            .map(|v| v.as_f64().map(|k| crate::config::gemma3n::normal_cdf(k) as f32 as f64))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| GemmaError::format(&file.path, "metadata `gemma3n.activation_sparsity_scale` must hold numbers"))?,
        _ => (0..n).map(|i| if i < 10 { 0.95 } else { 0.0 }).collect(),
    };
    c.insert("activation_sparsity_pattern".into(), json!(sparsity));
    // llama.cpp caps at 30 when the key is absent; 0 means none.
    let cap = float(keys::FINAL_SOFTCAP).unwrap_or(30.0);
    c.insert("final_logit_softcapping".into(), if cap > 0.0 { json!(cap) } else { Value::Null });
    crate::gguf::head_and_special_tokens(file, &mut c);
    Ok(Value::Object(c))
}
