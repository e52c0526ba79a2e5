//! Gemma 4's config fields beyond Gemma 3's, read into the per-layer specs
//! (`per_layer_config` or `global_head_dim`/`num_global_key_value_heads`,
//! `attention_k_eq_v`, `num_kv_shared_layers`, `use_double_wide_mlp`) and
//! the model-wide extras (per-layer embeddings, MoE). As transformers 5.x
//! `Gemma4TextConfig` defines them.

use super::{Fields, LayerSpec, MoeSpec};
use gemma_core::{GemmaError, Result};
use serde_json::Value;

/// Model-wide Gemma 3n/4 settings.
pub(crate) struct Extra {
    pub per_layer_input_size: usize,
    pub per_layer_vocab_size: usize,
    pub moe: Option<MoeSpec>,
    pub altup: Option<crate::config::AltUpSpec>,
    pub laurel_rank: usize,
}

impl Extra {
    /// Nothing (Gemma 1–3).
    pub fn none() -> Self {
        Self { per_layer_input_size: 0, per_layer_vocab_size: 0, moe: None, altup: None, laurel_rank: 0 }
    }
}

/// A non-negative integer field (0 allowed, unlike `Fields::usize_opt`).
pub(crate) fn count(f: &Fields, key: &str) -> Result<usize> {
    match f.get(key) {
        None => Ok(0),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| GemmaError::config(f.name(key), format!("expected a non-negative integer, found {v}"))),
    }
}

/// Read the Gemma 4 fields, adjusting `layers` (parsed with the sliding
/// geometry) in place.
pub(crate) fn parse(f: &Fields, layers: &mut [LayerSpec]) -> Result<Extra> {
    let n = layers.len();
    let k_eq_v = f.bool_opt("attention_k_eq_v")?.unwrap_or(false);
    let global_kv = f.usize_opt("num_global_key_value_heads")?;
    let global_hd = f.usize_opt("global_head_dim")?;
    // Full layers: their own head width (and KV heads with k_eq_v).
    for spec in layers.iter_mut().filter(|l| !l.attention.is_sliding()) {
        if let Some(hd) = global_hd {
            spec.head_dim = hd;
        }
        if k_eq_v {
            spec.k_eq_v = true;
            if let Some(kv) = global_kv {
                spec.num_kv_heads = kv;
            }
        }
    }
    // `per_layer_config` (what save_pretrained writes) wins: {"05": {"head_dim": 512, "num_key_value_heads": 2}}.
    if let Some(plc) = f.get("per_layer_config") {
        let map = plc.as_object().ok_or_else(|| GemmaError::config(f.name("per_layer_config"), "expected an object"))?;
        for (key, v) in map {
            let field = f.name(&format!("per_layer_config.{key}"));
            let l: usize = key.parse().map_err(|_| GemmaError::config(&field, "keys must be layer indices"))?;
            let spec = layers.get_mut(l).ok_or_else(|| GemmaError::config(&field, format!("layer {l} does not exist ({n} layers)")))?;
            let o = v.as_object().ok_or_else(|| GemmaError::config(&field, "expected an object"))?;
            for (k, x) in o {
                let val = x.as_u64().filter(|&v| v > 0).ok_or_else(|| GemmaError::config(format!("{field}.{k}"), format!("expected a positive integer, found {x}")))? as usize;
                match k.as_str() {
                    "head_dim" => spec.head_dim = val,
                    "num_key_value_heads" => spec.num_kv_heads = val,
                    other => return Err(GemmaError::config(format!("{field}.{other}"), "unknown per-layer field")),
                }
            }
        }
    }
    for (l, spec) in layers.iter().enumerate() {
        if spec.head_dim % 2 != 0 {
            return Err(GemmaError::config(f.name("per_layer_config"), format!("layer {l}: head_dim {} must be even for RoPE", spec.head_dim)));
        }
    }
    let first = kv_sharing(f, layers)?;
    if f.bool_opt("use_double_wide_mlp")?.unwrap_or(false) {
        layers[first..].iter_mut().for_each(|l| l.intermediate_size *= 2);
    }
    let per_layer_input_size = count(f, "hidden_size_per_layer_input")?;
    // 0 (a model without per-layer inputs: the MTP assistants) is allowed.
    let per_layer_vocab_size = match f.get("vocab_size_per_layer_input") {
        Some(v) if !v.is_null() => count(f, "vocab_size_per_layer_input")?,
        _ => f.usize("vocab_size")?,
    };
    if per_layer_input_size > 0 && per_layer_vocab_size == 0 {
        return Err(GemmaError::config(f.name("vocab_size_per_layer_input"), "is 0, but hidden_size_per_layer_input asks for per-layer inputs"));
    }
    let moe = if f.bool_opt("enable_moe_block")?.unwrap_or(false) {
        let experts = f.usize("num_experts")?;
        let top_k = f.usize("top_k_experts")?;
        if top_k > experts {
            return Err(GemmaError::config(f.name("top_k_experts"), format!("{top_k} is more than num_experts {experts}")));
        }
        Some(MoeSpec { experts, top_k, intermediate_size: f.usize("moe_intermediate_size")? })
    } else {
        None
    };
    if let Some(Value::String(act)) = f.get("hidden_activation") {
        if act != "gelu_pytorch_tanh" {
            return Err(GemmaError::config(f.name("hidden_activation"), format!("activation `{act}` is not supported")));
        }
    }
    Ok(Extra { per_layer_input_size, per_layer_vocab_size, moe, altup: None, laurel_rank: 0 })
}

/// KV sharing (Gemma 3n and 4): the last `num_kv_shared_layers` layers read
/// the cache of the last earlier layer of their own type. Returns the first
/// sharing layer.
pub(crate) fn kv_sharing(f: &Fields, layers: &mut [LayerSpec]) -> Result<usize> {
    let n = layers.len();
    let shared = count(f, "num_kv_shared_layers")?;
    if shared > n {
        return Err(GemmaError::config(f.name("num_kv_shared_layers"), format!("{shared} is more than the {n} layers")));
    }
    let first = n - shared;
    for l in first..n {
        let sliding = layers[l].attention.is_sliding();
        let src = (0..first).rev().find(|&j| layers[j].attention.is_sliding() == sliding).ok_or_else(|| {
            GemmaError::config(f.name("num_kv_shared_layers"), format!("layer {l} shares keys and values, but no earlier layer of its type computes them"))
        })?;
        if layers[src].head_dim != layers[l].head_dim || layers[src].num_kv_heads != layers[l].num_kv_heads {
            return Err(GemmaError::config(f.name("num_kv_shared_layers"), format!("layer {l} and its source {src} differ in head geometry")));
        }
        layers[l].kv_source = Some(src);
    }
    Ok(first)
}

/// Config fields transformers defines for Gemma 1–4 text models (or wrote
/// in older versions), and generic fields that never change the math.
const KNOWN_FIELDS: &[&str] = &[
    "_name_or_path", "_sliding_window_pattern", "architectures", "attention_bias", "attention_dropout", "attention_k_eq_v",
    "attn_logit_softcapping", "bos_token_id", "chunk_size_feed_forward", "dtype", "enable_moe_block", "eos_token_id",
    "final_logit_softcapping", "head_dim", "hidden_act", "hidden_activation", "hidden_size", "hidden_size_per_layer_input",
    "id2label", "initializer_range", "intermediate_size", "is_encoder_decoder", "label2id", "layer_types",
    "max_position_embeddings", "model_type", "moe_intermediate_size", "num_attention_heads", "num_experts", "num_hidden_layers",
    "num_key_value_heads", "num_kv_shared_layers", "output_attentions", "output_hidden_states", "pad_token_id",
    "per_layer_config", "problem_type", "query_pre_attn_scalar", "return_dict", "rms_norm_eps", "rope_parameters",
    "sliding_window", "tie_word_embeddings", "top_k_experts", "transformers_version", "use_bidirectional_attention",
    "use_cache", "use_double_wide_mlp", "vocab_size", "vocab_size_per_layer_input",
    // Older transformers versions and released checkpoints.
    "rope_theta", "rope_scaling", "rope_local_base_freq", "sliding_window_pattern", "torch_dtype", "cache_implementation",
    "global_head_dim", "num_global_key_value_heads", "use_sliding_window", "final_logit_soft_cap",
];

/// Fields only Gemma 3n has (altup_coef_clip and altup_lr_multiplier act
/// in training only).
const GEMMA3N_FIELDS: &[&str] = &[
    "activation_sparsity_pattern", "altup_active_idx", "altup_coef_clip", "altup_correct_scale", "altup_num_inputs",
    "altup_lr_multiplier", "laurel_rank",
];

/// Words that mark a field as one that may change the forward pass.
const MATH_WORDS: &[&str] = &[
    "rope", "norm", "attn", "attention", "softcap", "scal", "head", "layer", "window", "expert", "moe", "act", "embed", "bias",
    "eps", "dim", "size", "rotary", "kv", "quant", "altup", "laurel", "sparsity", "ffn", "mlp", "logit",
];

/// Refuse a config field that transformers does not define for Gemma and
/// that may change the math (its name says so), rather than silently
/// ignore it; `quantization_config` (pre-quantized bitsandbytes/GPTQ/AWQ
/// weights) is refused by name. Other unknown fields (tool versions and
/// the like) are ignored.
pub(crate) fn check_unknown_fields(f: &Fields, family: super::Family) -> gemma_core::Result<()> {
    if f.get("quantization_config").is_some() {
        return Err(GemmaError::config(
            f.name("quantization_config"),
            "pre-quantized checkpoints (bitsandbytes, GPTQ, AWQ, …) are not supported; load the bf16/f32 weights (then --dtype q4_k etc.) or a GGUF file",
        ));
    }
    for key in f.obj.keys() {
        let own = family == crate::config::Family::Gemma3n && GEMMA3N_FIELDS.contains(&key.as_str());
        if own || KNOWN_FIELDS.contains(&key.as_str()) || f.get(key).is_none() {
            continue;
        }
        let lower = key.to_lowercase();
        if MATH_WORDS.iter().any(|w| lower.contains(w)) {
            return Err(GemmaError::config(
                f.name(key),
                "is not a field gemma-rs knows for this architecture, and it may change the math; refusing rather than guessing",
            ));
        }
    }
    Ok(())
}
