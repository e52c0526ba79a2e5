//! `GemmaConfig`: every hyperparameter that changes the math, parsed once
//! from a Hugging Face `config.json`. Fields the engine cannot honor are
//! rejected with an error naming them.

pub(crate) mod gemma3n;
pub(crate) mod gemma4;

use gemma_core::{DType, GemmaError, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Model generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Gemma 1 (`GemmaForCausalLM`).
    Gemma1,
    /// Gemma 2 (`Gemma2ForCausalLM`): softcaps, sandwich norms, alternating sliding windows.
    Gemma2,
    /// Gemma 3 text (`Gemma3ForCausalLM`, or the text part of `Gemma3ForConditionalGeneration`).
    Gemma3,
    /// Gemma 4 text (`Gemma4ForCausalLM`, or the text part of
    /// `Gemma4ForConditionalGeneration`): plain `x̂·w` norms, attention scale
    /// 1, per-layer-type head geometry, partial RoPE, per-layer embeddings,
    /// KV sharing, MoE.
    Gemma4,
    /// Gemma 3n text (`Gemma3nForCausalLM`, or the text part of
    /// `Gemma3nForConditionalGeneration`): Gemma 4's norms and scale, plus
    /// AltUp streams, LAuReL, activation sparsity, per-layer embeddings and
    /// KV sharing.
    Gemma3n,
}

impl Family {
    /// Human name, e.g. "Gemma 2".
    pub fn name(self) -> &'static str {
        match self {
            Family::Gemma1 => "Gemma 1",
            Family::Gemma2 => "Gemma 2",
            Family::Gemma3 => "Gemma 3",
            Family::Gemma4 => "Gemma 4",
            Family::Gemma3n => "Gemma 3n",
        }
    }
}

/// Feed-forward activation. Gemma uses tanh-approximated GELU throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu(x, approximate="tanh")`.
    GeluTanh,
}

/// Which keys a layer's queries see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// All previous positions.
    Global,
    /// Query `i` sees keys `j` with `i - window < j <= i`.
    Sliding {
        /// Number of positions seen, the query's own included.
        window: usize,
    },
}

impl AttentionKind {
    /// True for sliding-window layers.
    pub fn is_sliding(self) -> bool {
        matches!(self, AttentionKind::Sliding { .. })
    }

    /// `L` for local (sliding), `G` for global: used to print layer patterns.
    pub fn letter(self) -> char {
        if self.is_sliding() {
            'L'
        } else {
            'G'
        }
    }
}

/// Per-layer variation.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Global or sliding-window attention.
    pub attention: AttentionKind,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Linear RoPE scaling factor (positions divided by it); 1.0 for none.
    pub rope_linear_factor: f64,
    /// Fraction of the frequency pairs that rotate (1 for full RoPE; less
    /// for Gemma 4's partial "proportional" RoPE: the rest pass unchanged).
    pub rope_partial: f64,
    /// Width of one head in this layer.
    pub head_dim: usize,
    /// Key/value heads of this layer.
    pub num_kv_heads: usize,
    /// Feed-forward width of this layer.
    pub intermediate_size: usize,
    /// Keys and values are another (earlier) layer's (Gemma 4 KV sharing):
    /// this layer computes and stores none.
    pub kv_source: Option<usize>,
    /// Values are the key projection's raw output (Gemma 4 `attention_k_eq_v`).
    pub k_eq_v: bool,
    /// Gemma 3n activation sparsity: the gate becomes `relu(g − (mean(g) +
    /// k·std(g)))` before the GELU; this is `k`, the standard normal
    /// quantile of the layer's target sparsity.
    pub gate_sparsity_k: Option<f32>,
    /// The query sits one position past the last key it reads (Gemma 4 MTP
    /// assistants: the drafted token's own keys are not in the target's
    /// cache they read).
    pub query_ahead: bool,
}

/// Gemma 3n's AltUp: the residual is `streams` parallel copies of the
/// hidden state; each layer predicts all of them from a mix, runs on the
/// `active` one and corrects the others from its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AltUpSpec {
    /// Number of streams (`altup_num_inputs`).
    pub streams: usize,
    /// The stream the layer computes on (`altup_active_idx`).
    pub active: usize,
    /// Scale the corrected active stream by `correct_output_scale` before
    /// it feeds the per-layer input (`altup_correct_scale`).
    pub correct_scale: bool,
}

/// Gemma 4's mixture-of-experts block (beside the dense MLP of every layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeSpec {
    /// Experts per layer.
    pub experts: usize,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Feed-forward width of one expert.
    pub intermediate_size: usize,
}

/// Where an image's soft tokens attend both ways (transformers' masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSpans {
    /// Every layer: causal OR within the same image (Gemma 3).
    All,
    /// Sliding layers only (Gemma 4 `"vision"`); global layers stay causal.
    Sliding,
    /// No layer: image tokens are causal like text (Gemma 4 without `"vision"`).
    None,
}

impl ImageSpans {
    /// Whether a layer of `kind` applies the image spans.
    pub fn applies(self, sliding: bool) -> bool {
        match self {
            ImageSpans::All => true,
            ImageSpans::Sliding => sliding,
            ImageSpans::None => false,
        }
    }
}

/// The typed configuration of one Gemma checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    /// Architecture generation.
    pub family: Family,
    /// The `architectures[0]` string (or model_type) it was read from.
    pub architecture: String,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (1 = MQA, < heads = GQA).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
    /// Attention score scale: `query_pre_attn_scalar^-0.5`.
    pub attn_scale: f32,
    /// `cap * tanh(s / cap)` on attention scores (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// `cap * tanh(l / cap)` on final logits (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Embedding multiplier `sqrt(hidden_size)`, rounded to `dtype`.
    pub embed_scale: f32,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Post-attention and post-feed-forward norms (Gemma 2 and 3).
    pub sandwich_norms: bool,
    /// RMSNorm on each query and key head (Gemma 3).
    pub qk_norm: bool,
    /// Output head shares the embedding.
    pub tie_word_embeddings: bool,
    /// Added to stored norm weights: 1 for Gemma 1–3 (`x̂·(1+w)`), 0 for Gemma 4 (`x̂·w`).
    pub norm_offset: f32,
    /// Scale-free RMSNorm on each value head (Gemma 4).
    pub v_norm: bool,
    /// Width of each layer's slice of the per-layer embeddings (Gemma 4 E models; 0: none).
    pub per_layer_input_size: usize,
    /// Rows of the per-layer embedding table.
    pub per_layer_vocab_size: usize,
    /// Mixture-of-experts block (Gemma 4 26B-A4B).
    pub moe: Option<MoeSpec>,
    /// Gemma 3n AltUp streams.
    pub altup: Option<AltUpSpec>,
    /// Gemma 3n LAuReL rank (0: none).
    pub laurel_rank: usize,
    /// Each layer scales its output by a stored scalar (Gemma 4).
    pub layer_scalar: bool,
    /// The checkpoint also holds vision/audio towers (only the text part is loaded).
    pub has_towers: bool,
    /// Attention sees the whole sequence both ways (EmbeddingGemma): no
    /// generation, one forward over all tokens.
    pub bidirectional: bool,
    /// Which layers let an image's soft tokens see the whole image (within
    /// the window): every layer (Gemma 3), the sliding ones (Gemma 4 with
    /// `use_bidirectional_attention: "vision"`) or none (other Gemma 4).
    pub image_spans: ImageSpans,
    /// The longest run of media rows (one image's soft tokens) a forward
    /// step must hold whole; 0 until a tower is attached. Steps may then be
    /// as long as `max(MAX_CHUNK, media_run)` ([`GemmaConfig::step_limit`]).
    pub media_run: usize,
    /// The checkpoint's declared dtype (`dtype` / `torch_dtype`), if any.
    pub dtype: Option<DType>,
    /// BOS id from the config.
    pub bos_token_id: Option<u32>,
    /// The pad id (0 when the config has none, as every Gemma tokenizer):
    /// an image's soft tokens read its per-layer embedding row.
    pub pad_token_id: u32,
    /// EOS ids from the config.
    pub eos_token_ids: Vec<u32>,
    /// One entry per layer.
    pub layers: Vec<LayerSpec>,
}

/// Typed access to a JSON object with errors naming the field.
pub(crate) struct Fields<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    pub(crate) prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| GemmaError::config(self.name(key), format!("expected a positive integer, found {v}"))),
        }
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| GemmaError::config(self.name(key), "required field is missing"))
    }

    pub(crate) fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| GemmaError::config(self.name(key), format!("expected a number, found {v}"))),
        }
    }

    pub(crate) fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| GemmaError::config(self.name(key), format!("expected true or false, found {v}"))),
        }
    }

    pub(crate) fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| GemmaError::config(self.name(key), format!("expected a string, found {v}"))),
        }
    }

    pub(crate) fn ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).ok_or_else(|| GemmaError::config(self.name(key), "expected a token id")),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|x| x as u32).ok_or_else(|| GemmaError::config(self.name(key), format!("expected token ids, found {v}"))))
                .collect(),
            Some(v) => Err(GemmaError::config(self.name(key), format!("expected a token id or a list of them, found {v}"))),
        }
    }
}

/// Parse a dtype name as transformers writes it.
pub fn parse_dtype(s: &str) -> Option<DType> {
    match s.trim_start_matches("torch.") {
        "float32" | "float" | "f32" => Some(DType::F32),
        "bfloat16" | "bf16" => Some(DType::BF16),
        "float16" | "half" | "f16" => Some(DType::F16),
        _ => None,
    }
}

/// A RoPE setting for one layer type.
#[derive(Debug, Clone, Copy)]
pub struct Rope {
    pub(crate) theta: f64,
    pub(crate) factor: f64,
    /// Fraction of the frequency pairs that rotate (Gemma 4 "proportional").
    pub(crate) partial: f64,
}

impl LayerSpec {
    /// Rotated frequency pairs (transformers: `int(partial_rotary_factor *
    /// head_dim // 2)`).
    pub fn rope_pairs(&self) -> usize {
        ((self.rope_partial * self.head_dim as f64) / 2.0).floor() as usize
    }
}

/// Parse one `rope_parameters` / `rope_scaling` object.
fn parse_rope(obj: &Value, field: &str, default_theta: f64) -> Result<Rope> {
    let map = obj.as_object().ok_or_else(|| GemmaError::config(field, format!("expected an object, found {obj}")))?;
    let f = Fields { obj: map, prefix: "" };
    let kind = f.str_opt("rope_type")?.or(f.str_opt("type")?).unwrap_or("default");
    let theta = f.f64_opt("rope_theta")?.unwrap_or(default_theta);
    let mut partial = 1.0;
    let factor = match kind {
        "default" => 1.0,
        // Gemma 4's global layers: the first `partial_rotary_factor` of the
        // frequency pairs rotate (inverse frequencies over the full head
        // width), the others pass through; `factor` divides as usual.
        "proportional" => {
            partial = f.f64_opt("partial_rotary_factor")?.unwrap_or(1.0);
            if !(partial > 0.0 && partial <= 1.0) {
                return Err(GemmaError::config(format!("{field}.partial_rotary_factor"), "must be in (0, 1]"));
            }
            f.f64_opt("factor")?.unwrap_or(1.0)
        }
        "linear" => f.f64_opt("factor")?.ok_or_else(|| GemmaError::config(format!("{field}.factor"), "linear RoPE scaling needs a factor"))?,
        other => {
            return Err(GemmaError::config(
                format!("{field}.rope_type"),
                format!("RoPE type `{other}` is not supported (Gemma uses `default`, `linear` and `proportional`)"),
            ))
        }
    };
    if factor <= 0.0 {
        return Err(GemmaError::config(format!("{field}.factor"), "must be positive"));
    }
    Ok(Rope { theta, factor, partial })
}

impl GemmaConfig {
    /// The most new positions one forward step takes: [`crate::MAX_CHUNK`],
    /// or a longer media run that must stay whole to attend to itself both
    /// ways (Gemma 4's 560 and 1120 soft-token budgets). Sliding-window
    /// caches keep `window + step_limit()` positions.
    pub fn step_limit(&self) -> usize {
        crate::cache::MAX_CHUNK.max(self.media_run)
    }

    /// Read and parse a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(path, format!("invalid JSON: {e}")))?;
        Self::from_json(&value).map_err(|e| match e {
            GemmaError::Config { field, message } => GemmaError::Config { field: format!("{}: {field}", path.display()), message },
            other => other,
        })
    }

    /// Parse a Hugging Face config object.
    pub fn from_json(root: &Value) -> Result<Self> {
        let root_obj = root.as_object().ok_or_else(|| GemmaError::config("<root>", "config.json must be a JSON object"))?;
        let top = Fields { obj: root_obj, prefix: "" };
        let architecture = match top.get("architectures").and_then(|a| a.as_array()).and_then(|a| a.first()) {
            Some(v) => v.as_str().ok_or_else(|| GemmaError::config("architectures", "expected a list of strings"))?.to_string(),
            None => top
                .str_opt("model_type")?
                .ok_or_else(|| GemmaError::config("architectures", "neither `architectures` nor `model_type` is set"))?
                .to_string(),
        };
        let (family, nested) = match architecture.as_str() {
            "GemmaForCausalLM" | "gemma" => (Family::Gemma1, false),
            "Gemma2ForCausalLM" | "gemma2" => (Family::Gemma2, false),
            "Gemma3ForCausalLM" | "gemma3_text" | "Gemma3TextModel" => (Family::Gemma3, false),
            "Gemma3ForConditionalGeneration" | "gemma3" => (Family::Gemma3, true),
            "Gemma4ForCausalLM" | "gemma4_text" => (Family::Gemma4, false),
            "Gemma4ForConditionalGeneration" | "gemma4" => (Family::Gemma4, true),
            // The 12B "unified" model: the Gemma 4 dense decoder (no
            // per-layer embeddings, no MoE; transformers drops those fields).
            "Gemma4UnifiedForCausalLM" | "gemma4_unified_text" => (Family::Gemma4, false),
            "Gemma4UnifiedForConditionalGeneration" | "gemma4_unified" => (Family::Gemma4, true),
            "Gemma3nForCausalLM" | "gemma3n_text" => (Family::Gemma3n, false),
            "Gemma3nForConditionalGeneration" | "gemma3n" => (Family::Gemma3n, true),
            other => {
                return Err(GemmaError::Unsupported(format!(
                    "architecture `{other}`; supported: GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3TextModel (EmbeddingGemma), Gemma3nForCausalLM, Gemma3nForConditionalGeneration, Gemma4ForCausalLM, Gemma4ForConditionalGeneration, Gemma4UnifiedForCausalLM, Gemma4UnifiedForConditionalGeneration"
                )))
            }
        };
        let has_towers = nested && ["vision_config", "audio_config"].iter().any(|k| top.get(k).is_some());
        let text_obj = if nested {
            top.get("text_config")
                .and_then(Value::as_object)
                .ok_or_else(|| GemmaError::config("text_config", format!("{architecture} needs a `text_config` object")))?
        } else {
            root_obj
        };
        let f = Fields { obj: text_obj, prefix: if nested { "text_config." } else { "" } };
        gemma4::check_unknown_fields(&f, family)?;

        let hidden_size = f.usize("hidden_size")?;
        let num_heads = f.usize("num_attention_heads")?;
        let num_kv_heads = f.usize_opt("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads % num_kv_heads != 0 {
            return Err(GemmaError::config(f.name("num_key_value_heads"), format!("{num_kv_heads} does not divide num_attention_heads {num_heads}")));
        }
        let head_dim = f.usize_opt("head_dim")?.unwrap_or(hidden_size / num_heads);
        if head_dim % 2 != 0 {
            return Err(GemmaError::config(f.name("head_dim"), "must be even for RoPE"));
        }
        let num_layers = f.usize("num_hidden_layers")?;

        // Activation: `hidden_activation` wins; Gemma 1 configs saying
        // `hidden_act: "gelu"` were trained with the tanh approximation.
        let act_field = if f.get("hidden_activation").is_some() { "hidden_activation" } else { "hidden_act" };
        let activation = match f.str_opt(act_field)? {
            None | Some("gelu_pytorch_tanh") | Some("gelu_new") | Some("gelu_fast") => Activation::GeluTanh,
            Some("gelu") if act_field == "hidden_act" => Activation::GeluTanh,
            Some(other) => {
                return Err(GemmaError::config(f.name(act_field), format!("activation `{other}` is not supported (Gemma uses gelu_pytorch_tanh)")))
            }
        };
        if f.bool_opt("attention_bias")? == Some(true) {
            return Err(GemmaError::config(f.name("attention_bias"), "attention biases are not supported (no Gemma checkpoint uses them)"));
        }
        let bidirectional = match f.get("use_bidirectional_attention") {
            None | Some(Value::Bool(false)) => false,
            // EmbeddingGemma: every query sees the whole sequence (sliding
            // layers: |i − j| ≤ sliding_window / 2).
            Some(Value::Bool(true)) if family == Family::Gemma3 => true,
            // Gemma 4: only image tokens attend both ways (on sliding
            // layers); text is causal.
            Some(Value::String(m)) if m == "vision" && family == Family::Gemma4 => false,
            Some(v) => {
                return Err(GemmaError::config(f.name("use_bidirectional_attention"), format!("{v} is not supported (bidirectional attention is, for Gemma 3 embedding models)")))
            }
        };

        let query_pre_attn_scalar = match family {
            Family::Gemma1 => head_dim as f64,
            // Gemma 3n/4 attend with scale 1 (their q/k norms set the scale).
            Family::Gemma4 | Family::Gemma3n => 1.0,
            _ => f.f64_opt("query_pre_attn_scalar")?.unwrap_or(head_dim as f64),
        };
        if query_pre_attn_scalar <= 0.0 {
            return Err(GemmaError::config(f.name("query_pre_attn_scalar"), "must be positive"));
        }
        let positive = |key: &str| -> Result<Option<f32>> {
            match f.f64_opt(key)? {
                Some(x) if x <= 0.0 => Err(GemmaError::config(f.name(key), "must be positive or null")),
                other => Ok(other.map(|x| x as f32)),
            }
        };
        let (attn_softcap, final_softcap) = match family {
            Family::Gemma1 => (None, None),
            // Gemma 4 has no attention softcap (transformers ignores the field).
            Family::Gemma4 => (None, positive("final_logit_softcapping")?),
            // Gemma 3n: transformers' default cap is 30 when the field is absent.
            Family::Gemma3n => (None, if f.get("final_logit_softcapping").is_some() { positive("final_logit_softcapping")? } else { Some(30.0) }),
            _ => (positive("attn_logit_softcapping")?, positive("final_logit_softcapping")?),
        };

        let dtype_name = f.str_opt("dtype")?.or(f.str_opt("torch_dtype")?).or(top.str_opt("dtype")?).or(top.str_opt("torch_dtype")?);
        let dtype = match dtype_name {
            None => None,
            Some(s) => Some(parse_dtype(s).ok_or_else(|| GemmaError::config(f.name("dtype"), format!("unknown dtype `{s}`")))?),
        };
        let embed_scale = dtype.unwrap_or(DType::F32).round((hidden_size as f32).sqrt());

        // Gemma 3n may give one width per layer.
        let widths = match f.get("intermediate_size") {
            Some(Value::Array(list)) if family == Family::Gemma3n => {
                let w = list
                    .iter()
                    .map(|v| v.as_u64().filter(|&n| n > 0).map(|n| n as usize))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| GemmaError::config(f.name("intermediate_size"), "expected positive integers"))?;
                if w.len() != num_layers {
                    return Err(GemmaError::config(f.name("intermediate_size"), format!("has {} entries, num_hidden_layers is {num_layers}", w.len())));
                }
                w
            }
            _ => vec![f.usize("intermediate_size")?; num_layers],
        };
        let intermediate_size = widths.iter().copied().max().unwrap_or(0);
        let mut layers = Self::layer_specs(&f, family, num_layers, head_dim, num_kv_heads, intermediate_size)?;
        for (spec, &w) in layers.iter_mut().zip(&widths) {
            spec.intermediate_size = w;
        }
        if bidirectional {
            // transformers loads the window as W/2 + 1 and masks |i − j| < it.
            for l in &mut layers {
                if let AttentionKind::Sliding { window } = &mut l.attention {
                    *window = *window / 2 + 1;
                }
            }
        }
        let g4 = match family {
            Family::Gemma4 => gemma4::parse(&f, &mut layers)?,
            Family::Gemma3n => gemma3n::parse(&f, &mut layers)?,
            _ => gemma4::Extra::none(),
        };
        let mut eos_token_ids = f.ids("eos_token_id")?;
        if eos_token_ids.is_empty() {
            eos_token_ids = top.ids("eos_token_id")?;
        }
        Ok(Self {
            family,
            architecture,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: f.f64_opt("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            max_position_embeddings: f.usize_opt("max_position_embeddings")?.unwrap_or(8192),
            attn_scale: query_pre_attn_scalar.powf(-0.5) as f32,
            attn_softcap,
            final_softcap,
            embed_scale,
            activation,
            sandwich_norms: family != Family::Gemma1,
            qk_norm: matches!(family, Family::Gemma3 | Family::Gemma4 | Family::Gemma3n),
            tie_word_embeddings: f.bool_opt("tie_word_embeddings")?.or(top.bool_opt("tie_word_embeddings")?).unwrap_or(true),
            norm_offset: if matches!(family, Family::Gemma4 | Family::Gemma3n) { 0.0 } else { 1.0 },
            v_norm: matches!(family, Family::Gemma4 | Family::Gemma3n),
            per_layer_input_size: g4.per_layer_input_size,
            per_layer_vocab_size: g4.per_layer_vocab_size,
            moe: g4.moe,
            altup: g4.altup,
            laurel_rank: g4.laurel_rank,
            layer_scalar: family == Family::Gemma4,
            has_towers,
            bidirectional,
            image_spans: match family {
                Family::Gemma4 if matches!(f.get("use_bidirectional_attention"), Some(Value::String(m)) if m == "vision") => ImageSpans::Sliding,
                Family::Gemma4 => ImageSpans::None,
                _ => ImageSpans::All,
            },
            media_run: 0,
            dtype,
            bos_token_id: f.ids("bos_token_id")?.first().copied(),
            // Lenient: some configs write `null`; Gemma's pad id is 0.
            pad_token_id: f.get("pad_token_id").and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok()).unwrap_or(0),
            eos_token_ids,
            layers,
        })
    }

    /// Attention kind and RoPE per layer, from `layer_types` or the family's
    /// default pattern, and `rope_parameters` or the legacy RoPE keys.
    fn layer_specs(f: &Fields, family: Family, num_layers: usize, head_dim: usize, num_kv_heads: usize, ff: usize) -> Result<Vec<LayerSpec>> {
        let sliding = match f.get("layer_types") {
            Some(v) => {
                let list = v.as_array().ok_or_else(|| GemmaError::config(f.name("layer_types"), "expected a list"))?;
                if list.len() != num_layers {
                    return Err(GemmaError::config(f.name("layer_types"), format!("has {} entries, num_hidden_layers is {num_layers}", list.len())));
                }
                list.iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(GemmaError::config(
                            f.name("layer_types"),
                            format!("unknown layer type {t}; expected sliding_attention or full_attention"),
                        )),
                    })
                    .collect::<Result<Vec<bool>>>()?
            }
            None => match family {
                Family::Gemma1 => vec![false; num_layers],
                Family::Gemma2 => (0..num_layers).map(|i| (i + 1) % 2 != 0).collect(),
                // Gemma 4: five sliding layers to one full, the last always full.
                Family::Gemma4 => (0..num_layers).map(|i| (i + 1) % 6 != 0 && i + 1 != num_layers).collect(),
                // Gemma 3n: four sliding layers to one full.
                Family::Gemma3n => (0..num_layers).map(|i| (i + 1) % 5 != 0).collect(),
                Family::Gemma3 => {
                    let pattern = match f.usize_opt("sliding_window_pattern")? {
                        Some(p) => p,
                        None => f.usize_opt("_sliding_window_pattern")?.unwrap_or(6),
                    };
                    (0..num_layers).map(|i| (i + 1) % pattern != 0).collect()
                }
            },
        };
        let window = match f.usize_opt("sliding_window")? {
            Some(w) => w,
            None if sliding.iter().any(|&s| s) => {
                return Err(GemmaError::config(f.name("sliding_window"), "required when some layers use sliding attention"))
            }
            None => 0,
        };

        // RoPE per layer type.
        let legacy_theta = f.f64_opt("rope_theta")?.unwrap_or(if family == Family::Gemma3n { 1_000_000.0 } else { 10_000.0 });
        let (global, local) = match f.get("rope_parameters") {
            Some(v) if v.get("full_attention").is_some() || v.get("sliding_attention").is_some() => {
                let g = v.get("full_attention").ok_or_else(|| GemmaError::config(f.name("rope_parameters.full_attention"), "missing"))?;
                let global = parse_rope(g, &f.name("rope_parameters.full_attention"), legacy_theta)?;
                let local = match v.get("sliding_attention") {
                    Some(l) => parse_rope(l, &f.name("rope_parameters.sliding_attention"), 10_000.0)?,
                    None => global,
                };
                (global, local)
            }
            Some(v) => {
                let r = parse_rope(v, &f.name("rope_parameters"), legacy_theta)?;
                (r, r)
            }
            None => {
                let scaled = match f.get("rope_scaling") {
                    Some(s) => parse_rope(s, &f.name("rope_scaling"), legacy_theta)?.factor,
                    None => 1.0,
                };
                let global = Rope { theta: legacy_theta, factor: scaled, partial: 1.0 };
                let local = match family {
                    // Gemma 3 (and 3n) apply rope_scaling to global layers
                    // only and have their own local base.
                    Family::Gemma3 | Family::Gemma3n => Rope { theta: f.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0), factor: 1.0, partial: 1.0 },
                    _ => global,
                };
                (global, local)
            }
        };
        Ok(sliding
            .into_iter()
            .map(|s| {
                let (attention, rope) = if s { (AttentionKind::Sliding { window }, local) } else { (AttentionKind::Global, global) };
                LayerSpec {
                    attention,
                    rope_theta: rope.theta,
                    rope_linear_factor: rope.factor,
                    rope_partial: rope.partial,
                    head_dim,
                    num_kv_heads,
                    intermediate_size: ff,
                    kv_source: None,
                    k_eq_v: false,
                    gate_sparsity_k: None,
                    query_ahead: false,
                }
            })
            .collect())
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Width of all query heads of layer `l`.
    pub fn layer_q_dim(&self, l: usize) -> usize {
        self.num_heads * self.layers[l].head_dim
    }

    /// Width of all key (or value) heads of layer `l`.
    pub fn layer_kv_dim(&self, l: usize) -> usize {
        self.layers[l].num_kv_heads * self.layers[l].head_dim
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"architectures": ["Gemma3ForCausalLM"], "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
               "num_hidden_layers": 7, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
               "sliding_window": 3, "rope_theta": 1e6, "rope_scaling": {"rope_type": "linear", "factor": 8.0}})
    }

    #[test]
    fn gemma3_default_pattern_and_legacy_rope() {
        let c = GemmaConfig::from_json(&base()).unwrap();
        let kinds: Vec<bool> = c.layers.iter().map(|l| l.attention != AttentionKind::Global).collect();
        assert_eq!(kinds, [true, true, true, true, true, false, true]);
        assert_eq!(c.layers[5].rope_theta, 1e6);
        assert_eq!(c.layers[5].rope_linear_factor, 8.0);
        assert_eq!(c.layers[0].rope_theta, 10_000.0);
        assert_eq!(c.layers[0].rope_linear_factor, 1.0);
        assert_eq!(c.attn_scale, 0.5);
    }

    #[test]
    fn gemma2_alternates_starting_with_sliding() {
        let mut v = base();
        v["architectures"] = json!(["Gemma2ForCausalLM"]);
        v["rope_scaling"] = Value::Null;
        let c = GemmaConfig::from_json(&v).unwrap();
        let kinds: Vec<bool> = c.layers.iter().map(|l| l.attention != AttentionKind::Global).collect();
        assert_eq!(kinds, [true, false, true, false, true, false, true]);
    }

    #[test]
    fn embed_scale_rounds_to_dtype() {
        let mut v = base();
        v["hidden_size"] = json!(3072);
        v["head_dim"] = json!(4);
        v["torch_dtype"] = json!("bfloat16");
        assert_eq!(GemmaConfig::from_json(&v).unwrap().embed_scale, 55.5);
    }

    #[test]
    fn rejects_unknown_architecture_and_bad_fields() {
        let mut v = base();
        v["architectures"] = json!(["LlamaForCausalLM"]);
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("LlamaForCausalLM"));
        let mut v = base();
        v["hidden_activation"] = json!("silu");
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("hidden_activation"));
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 2.0});
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("yarn"));
        let mut v = base();
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("hidden_size"));
    }

    fn gemma4() -> Value {
        json!({"architectures": ["Gemma4ForCausalLM"], "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
               "num_hidden_layers": 6, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 4,
               "sliding_window": 3, "num_kv_shared_layers": 2, "use_double_wide_mlp": true,
               "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"],
               "attention_k_eq_v": true, "num_global_key_value_heads": 1,
               "per_layer_config": {"05": {"head_dim": 8}, "2": {"head_dim": 8}},
               "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                   "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}}})
    }

    #[test]
    fn gemma4_geometry_sharing_and_partial_rope() {
        let c = GemmaConfig::from_json(&gemma4()).unwrap();
        let l5 = &c.layers[5];
        assert_eq!((l5.head_dim, l5.num_kv_heads, l5.k_eq_v, l5.rope_pairs()), (8, 1, true, 1));
        assert_eq!(c.layers[0].rope_pairs(), 2);
        assert_eq!(c.layers[4].kv_source, Some(3));
        assert_eq!(c.layers[5].kv_source, Some(2));
        assert_eq!(c.layers[3].kv_source, None);
        // Without layer_types: five sliding to one full, the last always full.
        let mut v = gemma4();
        v.as_object_mut().unwrap().remove("layer_types");
        v["num_hidden_layers"] = json!(8);
        v["num_kv_shared_layers"] = json!(0);
        v["per_layer_config"] = json!({});
        let kinds: String = GemmaConfig::from_json(&v).unwrap().layers.iter().map(|l| l.attention.letter()).collect();
        assert_eq!(kinds, "LLLLLGLG");
        assert_eq!((c.attn_scale, c.norm_offset), (1.0, 0.0));
        assert_eq!(c.layers[4].intermediate_size, 32);
    }

    #[test]
    fn unknown_math_fields_are_refused_by_name() {
        let mut v = base();
        v["altup_num_inputs"] = json!(4);
        let e = GemmaConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("altup_num_inputs") && e.contains("math"), "{e}");
        let mut v = base();
        v["quantization_config"] = json!({"quant_method": "gptq"});
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("pre-quantized"));
        // Harmless unknown fields (tool versions) and null ones are ignored.
        let mut v = base();
        v["unsloth_version"] = json!("2025.1");
        v["rope_mystery"] = Value::Null;
        assert!(GemmaConfig::from_json(&v).is_ok());
    }

    #[test]
    fn gemma4_bad_fields_are_named() {
        let mut v = gemma4();
        v["per_layer_config"] = json!({"9": {"head_dim": 8}});
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("per_layer_config.9"));
        let mut v = gemma4();
        v["per_layer_config"] = json!({"1": {"sliding_window": 8}});
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("sliding_window"));
        let mut v = gemma4();
        v["num_kv_shared_layers"] = json!(6);
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("num_kv_shared_layers"));
        let mut v = base();
        v["use_bidirectional_attention"] = json!(true);
        v["architectures"] = json!(["Gemma3TextModel"]);
        let c = GemmaConfig::from_json(&v).unwrap();
        assert!(c.bidirectional);
        assert_eq!(c.layers[0].attention, AttentionKind::Sliding { window: 2 }, "3 on disk: |i - j| <= 1");
        let mut v = gemma4();
        v["use_bidirectional_attention"] = json!("all");
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("use_bidirectional_attention"));
    }

    /// A Gemma 3n config as the Hub's checkpoints write it (transformers
    /// 4.53: legacy RoPE keys, no layer_types, one FFN width).
    fn gemma3n() -> Value {
        json!({"architectures": ["Gemma3nForConditionalGeneration"], "text_config": {
               "model_type": "gemma3n_text", "vocab_size": 10, "vocab_size_per_layer_input": 8, "hidden_size": 8,
               "intermediate_size": 16, "num_hidden_layers": 12, "num_attention_heads": 2, "num_key_value_heads": 1,
               "head_dim": 4, "sliding_window": 3, "num_kv_shared_layers": 2, "rope_theta": 1000000.0,
               "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256, "altup_lr_multiplier": 1.0,
               "hidden_size_per_layer_input": 4, "laurel_rank": 2}, "vision_config": {}, "audio_config": {}})
    }

    #[test]
    fn gemma3n_defaults_as_transformers() {
        let c = GemmaConfig::from_json(&gemma3n()).unwrap();
        assert_eq!(c.family, Family::Gemma3n);
        assert!(c.has_towers);
        assert_eq!(c.attn_scale, 1.0);
        assert_eq!(c.final_softcap, Some(30.0));
        assert_eq!(c.norm_offset, 0.0);
        assert!(c.v_norm && c.qk_norm);
        assert_eq!(c.layers.iter().map(|l| l.attention.letter()).collect::<String>(), "LLLLGLLLLGLL");
        // Sparsity 0.95 on the first 10 layers of a model deeper than 10.
        assert_eq!(c.layers.iter().filter(|l| l.gate_sparsity_k.is_some()).count(), 10);
        assert!((c.layers[0].gate_sparsity_k.unwrap() - 1.644_853_6).abs() < 1e-6);
        assert_eq!((c.layers[4].rope_theta, c.layers[0].rope_theta), (1e6, 1e4));
        assert_eq!((c.layers[10].kv_source, c.layers[11].kv_source), (Some(8), Some(8)));
        assert_eq!(c.altup, Some(AltUpSpec { streams: 4, active: 0, correct_scale: true }));
        assert_eq!((c.laurel_rank, c.per_layer_input_size, c.per_layer_vocab_size), (2, 4, 8));
    }

    #[test]
    fn gemma3n_bad_fields_are_named() {
        let mut v = gemma3n();
        v["text_config"]["activation_sparsity_pattern"] = json!([0.95, 0.0]);
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("text_config.activation_sparsity_pattern"));
        let mut v = gemma3n();
        v["text_config"]["activation_sparsity_pattern"] = json!(vec![1.0; 12]);
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("not in [0, 1)"));
        let mut v = gemma3n();
        v["text_config"]["intermediate_size"] = json!([16, 16]);
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("intermediate_size"));
        let mut v = gemma3n();
        v["text_config"]["altup_active_idx"] = json!(4);
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("altup_active_idx"));
        let mut v = gemma3n();
        v["text_config"]["altup_extra_mixing"] = json!(2);
        assert!(GemmaConfig::from_json(&v).unwrap_err().to_string().contains("altup_extra_mixing"));
    }
}
