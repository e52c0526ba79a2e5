//! Known Gemma sizes, used to name a loaded model (and, later, to fill in
//! values that some file formats omit).

use crate::config::{Family, GemmaConfig};
use gemma_core::{GemmaError, Result};

/// One published Gemma text model size.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Generation.
    pub family: Family,
    /// Marketing name of the size, e.g. "2B".
    pub size: &'static str,
    /// Number of layers.
    pub num_layers: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// The text config as published (`config.json`, or its `text_config`),
    /// the fields that set the shapes; the rest take transformers' defaults.
    pub config: &'static str,
}

impl Variant {
    /// The parsed config.
    pub fn parse(&self) -> Result<GemmaConfig> {
        let v: serde_json::Value = serde_json::from_str(self.config).map_err(|e| GemmaError::config(self.size, e.to_string()))?;
        GemmaConfig::from_json(&v)
    }
}

macro_rules! v {
    ($family:ident, $size:expr, $layers:expr, $hidden:expr, $cfg:expr) => {
        Variant { family: Family::$family, size: $size, num_layers: $layers, hidden_size: $hidden, config: $cfg }
    };
}

/// The published text models.
pub const VARIANTS: &[Variant] = &[
    v!(Gemma1, "2B", 18, 2048, r#"{"architectures":["GemmaForCausalLM"],"vocab_size":256000,"hidden_size":2048,"intermediate_size":16384,"num_hidden_layers":18,"num_attention_heads":8,"num_key_value_heads":1,"head_dim":256,"max_position_embeddings":8192}"#),
    v!(Gemma1, "7B", 28, 3072, r#"{"architectures":["GemmaForCausalLM"],"vocab_size":256000,"hidden_size":3072,"intermediate_size":24576,"num_hidden_layers":28,"num_attention_heads":16,"num_key_value_heads":16,"head_dim":256,"max_position_embeddings":8192}"#),
    v!(Gemma2, "2B", 26, 2304, r#"{"architectures":["Gemma2ForCausalLM"],"vocab_size":256000,"hidden_size":2304,"intermediate_size":9216,"num_hidden_layers":26,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":256,"query_pre_attn_scalar":256,"sliding_window":4096,"attn_logit_softcapping":50.0,"final_logit_softcapping":30.0,"max_position_embeddings":8192}"#),
    v!(Gemma2, "9B", 42, 3584, r#"{"architectures":["Gemma2ForCausalLM"],"vocab_size":256000,"hidden_size":3584,"intermediate_size":14336,"num_hidden_layers":42,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":256,"query_pre_attn_scalar":256,"sliding_window":4096,"attn_logit_softcapping":50.0,"final_logit_softcapping":30.0,"max_position_embeddings":8192}"#),
    v!(Gemma2, "27B", 46, 4608, r#"{"architectures":["Gemma2ForCausalLM"],"vocab_size":256000,"hidden_size":4608,"intermediate_size":36864,"num_hidden_layers":46,"num_attention_heads":32,"num_key_value_heads":16,"head_dim":128,"query_pre_attn_scalar":144,"sliding_window":4096,"attn_logit_softcapping":50.0,"final_logit_softcapping":30.0,"max_position_embeddings":8192}"#),
    v!(Gemma3, "270M", 18, 640, r#"{"architectures":["Gemma3ForCausalLM"],"vocab_size":262144,"hidden_size":640,"intermediate_size":2048,"num_hidden_layers":18,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":256,"query_pre_attn_scalar":256,"sliding_window":512,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"max_position_embeddings":32768}"#),
    v!(Gemma3, "1B", 26, 1152, r#"{"architectures":["Gemma3ForCausalLM"],"vocab_size":262144,"hidden_size":1152,"intermediate_size":6912,"num_hidden_layers":26,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":256,"query_pre_attn_scalar":256,"sliding_window":512,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"max_position_embeddings":32768}"#),
    v!(Gemma3, "4B", 34, 2560, r#"{"architectures":["Gemma3ForCausalLM"],"vocab_size":262208,"hidden_size":2560,"intermediate_size":10240,"num_hidden_layers":34,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":256,"query_pre_attn_scalar":256,"sliding_window":1024,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"rope_scaling":{"rope_type":"linear","factor":8.0},"max_position_embeddings":131072}"#),
    v!(Gemma3, "12B", 48, 3840, r#"{"architectures":["Gemma3ForCausalLM"],"vocab_size":262208,"hidden_size":3840,"intermediate_size":15360,"num_hidden_layers":48,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":256,"query_pre_attn_scalar":256,"sliding_window":1024,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"rope_scaling":{"rope_type":"linear","factor":8.0},"max_position_embeddings":131072}"#),
    v!(Gemma3, "27B", 62, 5376, r#"{"architectures":["Gemma3ForCausalLM"],"vocab_size":262208,"hidden_size":5376,"intermediate_size":21504,"num_hidden_layers":62,"num_attention_heads":32,"num_key_value_heads":16,"head_dim":128,"query_pre_attn_scalar":168,"sliding_window":1024,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,"rope_scaling":{"rope_type":"linear","factor":8.0},"max_position_embeddings":131072}"#),
    // Gemma 3n: E4B is transformers' Gemma3nTextConfig default; E2B has 30 layers.
    v!(Gemma3n, "E2B", 30, 2048, r#"{"architectures":["Gemma3nForCausalLM"],"vocab_size":262400,"vocab_size_per_layer_input":262144,"hidden_size":2048,"hidden_size_per_layer_input":256,"intermediate_size":8192,"num_hidden_layers":30,"num_attention_heads":8,"num_key_value_heads":2,"head_dim":256,"sliding_window":512,"num_kv_shared_layers":10,"laurel_rank":64,"max_position_embeddings":32768}"#),
    v!(Gemma3n, "E4B", 35, 2048, r#"{"architectures":["Gemma3nForCausalLM"],"vocab_size":262400,"vocab_size_per_layer_input":262144,"hidden_size":2048,"hidden_size_per_layer_input":256,"intermediate_size":16384,"num_hidden_layers":35,"num_attention_heads":8,"num_key_value_heads":2,"head_dim":256,"sliding_window":512,"num_kv_shared_layers":15,"laurel_rank":64,"max_position_embeddings":32768}"#),
    // Gemma 4, as transformers' convert_gemma4_weights.py and
    // convert_gemma4_unified_weights.py give the text configs (not checked
    // against the Hub here).
    v!(Gemma4, "E2B", 35, 1536, r#"{"architectures":["Gemma4ForCausalLM"],"vocab_size":262144,"hidden_size":1536,"intermediate_size":6144,"num_hidden_layers":35,"num_attention_heads":8,"num_key_value_heads":1,"head_dim":256,"global_head_dim":512,"hidden_size_per_layer_input":256,"num_kv_shared_layers":20,"use_double_wide_mlp":true,"sliding_window":512,"final_logit_softcapping":30.0,"layer_types":["sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention"],"max_position_embeddings":131072}"#),
    v!(Gemma4, "E4B", 42, 2560, r#"{"architectures":["Gemma4ForCausalLM"],"vocab_size":262144,"hidden_size":2560,"intermediate_size":10240,"num_hidden_layers":42,"num_attention_heads":8,"num_key_value_heads":2,"head_dim":256,"global_head_dim":512,"hidden_size_per_layer_input":256,"num_kv_shared_layers":18,"sliding_window":512,"final_logit_softcapping":30.0,"max_position_embeddings":131072}"#),
    v!(Gemma4, "26B-A4B", 30, 2816, r#"{"architectures":["Gemma4ForCausalLM"],"vocab_size":262144,"hidden_size":2816,"intermediate_size":2112,"num_hidden_layers":30,"num_attention_heads":16,"num_key_value_heads":8,"num_global_key_value_heads":2,"head_dim":256,"global_head_dim":512,"attention_k_eq_v":true,"hidden_size_per_layer_input":0,"enable_moe_block":true,"num_experts":128,"top_k_experts":8,"moe_intermediate_size":704,"sliding_window":1024,"final_logit_softcapping":30.0,"max_position_embeddings":262144}"#),
    v!(Gemma4, "31B", 60, 5376, r#"{"architectures":["Gemma4ForCausalLM"],"vocab_size":262144,"hidden_size":5376,"intermediate_size":21504,"num_hidden_layers":60,"num_attention_heads":32,"num_key_value_heads":16,"num_global_key_value_heads":4,"head_dim":256,"global_head_dim":512,"attention_k_eq_v":true,"hidden_size_per_layer_input":0,"sliding_window":1024,"final_logit_softcapping":30.0,"max_position_embeddings":262144}"#),
    v!(Gemma4, "12B (unified)", 48, 3840, r#"{"architectures":["Gemma4UnifiedForCausalLM"],"vocab_size":262144,"hidden_size":3840,"intermediate_size":15360,"num_hidden_layers":48,"num_attention_heads":16,"num_key_value_heads":8,"num_global_key_value_heads":1,"head_dim":256,"global_head_dim":512,"attention_k_eq_v":true,"sliding_window":1024,"final_logit_softcapping":30.0,"max_position_embeddings":262144}"#),
];

/// The published variant matching `cfg`, if any.
pub fn identify(cfg: &GemmaConfig) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.family == cfg.family && v.num_layers == cfg.num_layers() && v.hidden_size == cfg.hidden_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_config_parses_and_matches_its_row() {
        for v in VARIANTS {
            let c = v.parse().unwrap_or_else(|e| panic!("{} {}: {e}", v.family.name(), v.size));
            assert_eq!((c.family, c.num_layers(), c.hidden_size), (v.family, v.num_layers, v.hidden_size), "{}", v.size);
            assert!(identify(&c).is_some_and(|w| w.size == v.size), "{} {}", v.family.name(), v.size);
            eprintln!("{} {}: {:.3}B parameters", v.family.name(), v.size, c.parameter_count() as f64 / 1e9);
        }
    }
}
