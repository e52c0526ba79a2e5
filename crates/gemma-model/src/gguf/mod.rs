//! Loading a model from a llama.cpp GGUF file. GGUF's quirks live here only:
//! hyperparameter keys, tensor names, norms that already hold `1 + w`, and
//! values the file omits (filled from the Gemma defaults documented below).

mod gemma3n;
mod gemma4;

use crate::tensors::{spec, Part};
use crate::gguf_keys as keys;
use crate::config::{Family, GemmaConfig};
use crate::forward::Model;
use crate::variants;
use crate::weights::{Naming, Weights};
use gemma_core::{DType, GemmaError, Result, Storage};
use gemma_formats::{GgufFile, GgufValue};
use serde_json::{json, Map, Value};

/// Gemma 3's local (sliding-layer) RoPE base; GGUF stores only the global one.
pub const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;
/// Gemma 3's sliding-window pattern (5 local : 1 global) when the file has none.
pub const GEMMA3_SLIDING_WINDOW_PATTERN: u64 = 6;

/// Translate GGUF hyperparameters into the Hugging Face config vocabulary, so
/// that one parser ([`GemmaConfig::from_json`]) validates every format.
pub fn config_json(file: &GgufFile) -> Result<Value> {
    let arch = file
        .get(keys::GENERAL_ARCHITECTURE)
        .and_then(GgufValue::as_str)
        .ok_or_else(|| GemmaError::format(&file.path, "metadata `general.architecture` is missing"))?;
    let hf_arch = match arch {
        "gemma" => "GemmaForCausalLM",
        "gemma2" => "Gemma2ForCausalLM",
        "gemma3" => "Gemma3ForCausalLM",
        "gemma4" => return gemma4::config_json(file),
        "gemma3n" => return gemma3n::config_json(file),
        other => {
            return Err(GemmaError::Unsupported(format!("GGUF architecture `{other}` in {} (supported: gemma, gemma2, gemma3, gemma3n, gemma4)", file.path.display())))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let num = |k: &str| -> Result<Option<Value>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().map(|x| Some(json!(x))).ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{}` is not a number", key(k))))
            }
        }
    };
    let int = |k: &str| -> Result<Option<Value>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(json!(x)))
                .ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{}` is not a non-negative integer", key(k)))),
        }
    };
    let embd_name = spec(Part::Embed).gguf;
    let embd = file.tensor(embd_name).ok_or_else(|| GemmaError::MissingTensor { name: embd_name.into() })?;
    let vocab = *embd.dims.get(1).ok_or_else(|| GemmaError::format(&file.path, "token_embd.weight is not a matrix"))?;

    let mut c = Map::new();
    c.insert("architectures".into(), json!([hf_arch]));
    c.insert("vocab_size".into(), json!(vocab));
    for (hf, gg) in [
        ("hidden_size", keys::EMBEDDING_LENGTH),
        ("intermediate_size", keys::FEED_FORWARD_LENGTH),
        ("num_hidden_layers", keys::BLOCK_COUNT),
        ("num_attention_heads", keys::HEAD_COUNT),
        ("num_key_value_heads", keys::HEAD_COUNT_KV),
        ("head_dim", keys::KEY_LENGTH),
        ("max_position_embeddings", keys::CONTEXT_LENGTH),
        ("sliding_window", keys::SLIDING_WINDOW),
    ] {
        if let Some(v) = int(gg)? {
            c.insert(hf.into(), v);
        }
    }
    for (hf, gg) in [
        ("rms_norm_eps", keys::RMS_EPSILON),
        ("rope_theta", keys::ROPE_FREQ_BASE),
        ("attn_logit_softcapping", keys::ATTN_SOFTCAP),
        ("final_logit_softcapping", keys::FINAL_SOFTCAP),
    ] {
        if let Some(v) = num(gg)? {
            c.insert(hf.into(), v);
        }
    }
    if let Some(v) = file.get(&key(keys::KEY_LENGTH)).and_then(GgufValue::as_u64) {
        if file.get(&key(keys::VALUE_LENGTH)).and_then(GgufValue::as_u64).is_some_and(|vl| vl != v) {
            return Err(GemmaError::Unsupported("key_length != value_length".into()));
        }
    }
    match file.get(&key(keys::ROPE_SCALING_TYPE)).and_then(GgufValue::as_str) {
        None | Some("none") => {}
        Some(kind) => {
            let factor = num(keys::ROPE_SCALING_FACTOR)?.unwrap_or(json!(1.0));
            c.insert("rope_scaling".into(), json!({"rope_type": kind, "factor": factor}));
        }
    }
    if arch == "gemma3" {
        let local = num(keys::ROPE_FREQ_BASE_SWA)?.unwrap_or(json!(GEMMA3_LOCAL_ROPE_BASE));
        c.insert("rope_local_base_freq".into(), local);
        let pattern = int(keys::SLIDING_WINDOW_PATTERN)?.unwrap_or(json!(GEMMA3_SLIDING_WINDOW_PATTERN));
        c.insert("sliding_window_pattern".into(), pattern);
    }
    head_and_special_tokens(file, &mut c);
    // A file may state the scale itself as `{arch}.attention.scale`; where
    // it does not, [`config`] sets the size's default once the config is typed.
    if arch != "gemma" {
        if let Some(scale) = num(keys::ATTENTION_SCALE)?.and_then(|v| v.as_f64()).filter(|&s| s > 0.0) {
            c.insert("query_pre_attn_scalar".into(), json!(1.0 / (scale * scale)));
        }
    }
    Ok(Value::Object(c))
}

/// The typed config of a GGUF file: its metadata in the Hugging Face
/// vocabulary ([`config_json`]), parsed once; a Gemma 2/3 file that states
/// no attention scale gets its size's default (llama.cpp's).
pub fn config(file: &GgufFile) -> Result<GemmaConfig> {
    let value = config_json(file)?;
    let mut cfg = GemmaConfig::from_json(&value).map_err(|e| match e {
        GemmaError::Config { field, message } => {
            GemmaError::Config { field: format!("{} (from GGUF metadata): {field}", file.path.display()), message }
        }
        other => other,
    })?;
    if matches!(cfg.family, Family::Gemma2 | Family::Gemma3) && value.get("query_pre_attn_scalar").is_none() {
        cfg.attn_scale = default_query_pre_attn_scalar(&cfg).powf(-0.5) as f32;
    }
    Ok(cfg)
}

/// `tie_word_embeddings` (no `output.weight`) and the BOS/EOS ids, for the
/// architectures mapped in their own modules.
pub(crate) fn head_and_special_tokens(file: &GgufFile, c: &mut Map<String, Value>) {
    c.insert("tie_word_embeddings".into(), json!(file.tensor(spec(Part::LmHead).gguf).is_none()));
    if let Some(id) = file.get(keys::BOS_TOKEN_ID).and_then(GgufValue::as_u64) {
        c.insert("bos_token_id".into(), json!(id));
    }
    if let Some(id) = file.get(keys::EOS_TOKEN_ID).and_then(GgufValue::as_u64) {
        c.insert("eos_token_id".into(), json!([id]));
    }
}

/// The `query_pre_attn_scalar` a GGUF file implies when it states none:
/// Gemma 2/3 27B use hidden/heads, every other size head_dim (as llama.cpp).
pub fn default_query_pre_attn_scalar(cfg: &GemmaConfig) -> f64 {
    match variants::identify(cfg) {
        Some(v) if v.size == "27B" => (cfg.hidden_size / cfg.num_heads) as f64,
        _ => cfg.head_dim as f64,
    }
}

/// Load config and weights from a GGUF file. Quantized tensors stay
/// quantized and memory-mapped unless `dtype` asks for a conversion.
pub fn load_model(file: &GgufFile, dtype: Option<DType>, progress: &mut dyn FnMut(usize, usize)) -> Result<Model> {
    let config = config(file)?;
    let source = |name: &str| -> Result<(Vec<usize>, Storage)> {
        let t = file.tensor(name).ok_or_else(|| GemmaError::MissingTensor { name: name.to_string() })?;
        let storage = Storage::Raw { dtype: t.dtype, len: t.elements() as usize, bytes: file.tensor_bytes(t) };
        Ok((t.shape(), storage))
    };
    let has_head = file.tensor(spec(Part::LmHead).gguf).is_some();
    let weights = Weights::load(&source, Naming::Gguf, &config, has_head, dtype, progress)?;
    let mut model = Model::new(config, weights)?;
    // As llama.cpp: an f16 KV cache (half the memory) and its rounding.
    model.numerics = crate::forward::Numerics::LlamaCpp;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_formats::GgufWriter;

    /// The config of a metadata-only Gemma 3 file of `layers` × `hidden`
    /// (a 4-row embedding: the size is known from the metadata), with or
    /// without a stated attention scale.
    fn config_of(layers: u64, hidden: u64, heads: u64, head_dim: u64, scale: Option<f32>) -> GemmaConfig {
        let mut w = GgufWriter::new();
        w.set(keys::GENERAL_ARCHITECTURE, GgufValue::String("gemma3".into()));
        let k = |s: &str| format!("gemma3.{s}");
        for (key, v) in [(keys::BLOCK_COUNT, layers), (keys::EMBEDDING_LENGTH, hidden), (keys::FEED_FORWARD_LENGTH, 4 * hidden), (keys::HEAD_COUNT, heads), (keys::HEAD_COUNT_KV, heads / 2), (keys::KEY_LENGTH, head_dim), (keys::VALUE_LENGTH, head_dim), (keys::SLIDING_WINDOW, 512)] {
            w.set(&k(key), GgufValue::U32(v as u32));
        }
        if let Some(s) = scale {
            w.set(&k(keys::ATTENTION_SCALE), GgufValue::F32(s));
        }
        w.add_tensor(spec(Part::Embed).gguf, vec![hidden, 4], DType::F32, vec![0; (hidden * 16) as usize]).unwrap();
        let path = std::env::temp_dir().join(format!("gemma-gguf-config-{}-{layers}-{}.gguf", std::process::id(), scale.is_some()));
        w.write(&path).unwrap();
        let cfg = config(&GgufFile::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        cfg.unwrap()
    }

    /// No stated scale: the 27B's hidden/heads (168), every other size its
    /// head_dim; a stated scale wins.
    #[test]
    fn attention_scale_defaults_by_size_once_the_config_is_typed() {
        assert_eq!(config_of(62, 5376, 32, 128, None).attn_scale, 168f32.powf(-0.5));
        assert_eq!(config_of(26, 1152, 4, 256, None).attn_scale, 256f32.powf(-0.5));
        assert_eq!(config_of(62, 5376, 32, 128, Some(0.125)).attn_scale, 0.125);
    }
}
