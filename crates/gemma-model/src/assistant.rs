//! Gemma 4's MTP assistants (`Gemma4AssistantForCausalLM`, Google's
//! `gemma-4-*-assistant` checkpoints): a small Gemma 4 text model that
//! drafts tokens for its target by reading the target's keys and values.
//!
//! One draft step, as transformers' `SinglePositionMultiTokenCandidateGenerator`
//! runs it: the input row is `pre_projection([target embedding of the last
//! token ; the target's final-normed hidden state that chose it])`
//! `[2·backbone] → [hidden]`, at the last token's position `p`; every layer
//! is an ordinary Gemma 4 block whose attention reads the cache of the
//! target's last sliding or full layer that computes keys and values
//! (positions `..p`: the last token's own keys are not there yet). The
//! final-normed output gives the logits (the tied head, no soft-cap; with
//! `use_ordered_embeddings` only the tokens of the top centroids get theirs,
//! the rest the smallest of those minus one) and, through
//! `post_projection` `[hidden] → [backbone]`, the hidden state the next step
//! starts from. Later steps keep the position `p` and the same keys.
//!
//! The layers are data like any other model's: each [`LayerSpec`] carries
//! `kv_source` = the target's layer and `query_ahead`. A sliding layer sees
//! the last `window + 1` keys, as transformers' bidirectional window mask
//! (`|q − k| ≤ window` on the flipped keys) lets it.

use crate::cache::KvCache;
use crate::config::{GemmaConfig, LayerSpec};
use crate::forward::{Model, Seg};
use crate::weights::Weights;
use crate::workspace::{buf, Workspace};
use crate::AttentionKind;
use gemma_core::{DType, GemmaError, Matrix, Result};
use gemma_formats::SafetensorsSet;
use gemma_kernels::{matmul_decode, rms_norm};
use serde_json::Value;
use std::path::Path;

/// The `use_ordered_embeddings` head: centroids pick the tokens that get logits.
#[derive(Debug)]
struct MaskedHead {
    /// `[centroids, hidden]`.
    centroids: Matrix,
    /// Token ids grouped by centroid: `[centroids, vocab / centroids]`.
    ordering: Vec<u32>,
    /// Centroids whose tokens are scored.
    top_k: usize,
}

/// A loaded MTP assistant, bound to the target it was loaded for.
#[derive(Debug)]
pub struct Assistant {
    /// The assistant's layers; `kv_source` of each indexes the target's layers.
    pub model: Model,
    /// `[hidden, 2·backbone]`.
    pre_projection: Matrix,
    /// `[backbone, hidden]`.
    post_projection: Matrix,
    masked: Option<MaskedHead>,
}

/// Whether `config.json` at `folder` describes a Gemma 4 assistant.
pub fn is_assistant(folder: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(folder.join("config.json")) else { return false };
    let Ok(v) = serde_json::from_str::<Value>(&text) else { return false };
    v.get("model_type").and_then(Value::as_str) == Some("gemma4_assistant")
        || v.get("architectures").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x.as_str() == Some("Gemma4AssistantForCausalLM")))
}

/// The target's layer whose cache a layer of this kind reads: its last
/// layer of the kind that computes keys and values.
fn producer(target: &GemmaConfig, sliding: bool) -> Option<usize> {
    (0..target.num_layers()).rev().find(|&j| target.layers[j].kv_source.is_none() && target.layers[j].attention.is_sliding() == sliding)
}

impl Assistant {
    /// Load the assistant in `folder` (config.json + safetensors) for
    /// `target`; errors name what does not fit it (backbone width,
    /// vocabulary, head geometry). `dtype` converts the matrices.
    pub fn load(folder: &Path, target: &GemmaConfig, dtype: Option<DType>) -> Result<Self> {
        let path = folder.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| GemmaError::io(&path, e))?;
        let root: Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(&path, format!("invalid JSON: {e}")))?;
        let config = Self::config(&root, target).map_err(|e| GemmaError::format(&path, e.to_string()))?;
        let set = SafetensorsSet::open_folder(folder)?;
        let weights = Weights::from_safetensors(&set, &config, dtype, &mut |_, _| {})?;
        let backbone = target.hidden_size;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix> {
            let (shape, storage) = set.load(name)?;
            if shape != [rows, cols] {
                return Err(GemmaError::ShapeMismatch { name: name.to_string(), expected: vec![rows, cols], found: shape });
            }
            let m = Matrix::new(rows, cols, storage);
            match dtype {
                Some(d) if gemma_quant::fallback(d, cols) == d => Ok(Matrix::new(rows, cols, gemma_quant::convert(m.storage, d)?)),
                _ => Ok(m),
            }
        };
        let h = config.hidden_size;
        let pre_projection = matrix("pre_projection.weight", h, 2 * backbone)?;
        let post_projection = matrix("post_projection.weight", backbone, h)?;
        let masked = if root.get("use_ordered_embeddings").and_then(Value::as_bool).unwrap_or(false) {
            let count = |k: &str, default: u64| root.get(k).and_then(Value::as_u64).unwrap_or(default) as usize;
            let (centroids, top_k) = (count("num_centroids", 2048), count("centroid_intermediate_top_k", 32));
            let vocab = config.vocab_size;
            if centroids == 0 || !vocab.is_multiple_of(centroids) || top_k == 0 || top_k > centroids {
                return Err(GemmaError::format(&path, format!("num_centroids {centroids} must divide vocab_size {vocab}, and centroid_intermediate_top_k {top_k} be 1..={centroids}")));
            }
            let ordering = set.load_i64("masked_embedding.token_ordering")?;
            if ordering.len() != vocab || ordering.iter().any(|&t| t < 0 || t as usize >= vocab) {
                return Err(GemmaError::format(&path, format!("masked_embedding.token_ordering must hold {vocab} token ids below {vocab}")));
            }
            Some(MaskedHead { centroids: matrix("masked_embedding.centroids.weight", centroids, h)?, ordering: ordering.iter().map(|&t| t as u32).collect(), top_k })
        } else {
            None
        };
        Ok(Self { model: Model::new(config, weights)?, pre_projection, post_projection, masked })
    }

    /// The assistant's text config, its layers bound to `target`'s caches.
    fn config(root: &Value, target: &GemmaConfig) -> Result<GemmaConfig> {
        let bad = |field: &str, why: String| GemmaError::config(field, why);
        let mut text = root.get("text_config").filter(|v| v.is_object()).cloned().ok_or_else(|| bad("text_config", "a Gemma 4 assistant needs a `text_config` object".into()))?;
        if target.family != crate::Family::Gemma4 {
            return Err(bad("model_type", format!("a Gemma 4 assistant drafts for Gemma 4 models; the target is {}", target.architecture)));
        }
        let backbone = root.get("backbone_hidden_size").and_then(Value::as_u64).unwrap_or(1536) as usize;
        if backbone != target.hidden_size {
            return Err(bad("backbone_hidden_size", format!("{backbone}, but the target model's hidden size is {}: this assistant was trained for another model", target.hidden_size)));
        }
        // Every layer reads the target's keys and values: parsed as a model
        // with its own, then bound below.
        text["num_kv_shared_layers"] = Value::from(0);
        text["architectures"] = Value::from(vec!["Gemma4ForCausalLM"]);
        let mut cfg = GemmaConfig::from_json(&text).map_err(|e| bad("text_config", e.to_string()))?;
        if cfg.family != crate::Family::Gemma4 || cfg.moe.is_some() || cfg.per_layer_input_size != 0 || cfg.altup.is_some() {
            return Err(bad("text_config", "an assistant is a plain Gemma 4 text model (no per-layer inputs, no experts)".into()));
        }
        if cfg.vocab_size != target.vocab_size {
            return Err(bad("text_config.vocab_size", format!("{}, the target's is {}", cfg.vocab_size, target.vocab_size)));
        }
        for (l, spec) in cfg.layers.iter_mut().enumerate() {
            let sliding = spec.attention.is_sliding();
            let src = producer(target, sliding).ok_or_else(|| bad("text_config.layer_types", format!("layer {l}: the target has no {} layer to read", if sliding { "sliding" } else { "full" })))?;
            let t: &LayerSpec = &target.layers[src];
            if (t.head_dim, t.num_kv_heads) != (spec.head_dim, spec.num_kv_heads) {
                return Err(bad(
                    "text_config",
                    format!("layer {l} has head_dim {} with {} KV heads; the target's layer {src} it reads has {} with {}", spec.head_dim, spec.num_kv_heads, t.head_dim, t.num_kv_heads),
                ));
            }
            spec.kv_source = Some(src);
            spec.query_ahead = true;
            if let AttentionKind::Sliding { window } = spec.attention {
                spec.attention = AttentionKind::Sliding { window: window + 1 };
            }
        }
        cfg.final_softcap = None;
        Ok(cfg)
    }

    /// One draft step after the target's `cache` (positions `..pos`, the
    /// target's own cache): the token at `pos` and the hidden state
    /// `[backbone]` that chose it (the target's final-normed one, or the
    /// previous step's output). Leaves the logits `[vocab]` in
    /// `ws.logits` and returns them with the next hidden state, written
    /// into `hidden`. The cache is only read.
    pub fn step<'w>(&self, target: &Model, cache: &mut KvCache, token: u32, pos: usize, hidden: &mut [f32], ws: &'w mut Workspace) -> Result<&'w [f32]> {
        let (cfg, backbone) = (&self.model.config, target.config.hidden_size);
        if hidden.len() != backbone || token as usize >= target.config.vocab_size {
            return Err(GemmaError::invalid("draft", format!("token {token} or a hidden state of {} values does not fit the target", hidden.len())));
        }
        if pos == 0 || cache.len() < pos {
            return Err(GemmaError::invalid("draft", format!("the target's cache holds {} positions; a draft at {pos} needs every earlier one", cache.len())));
        }
        let h = cfg.hidden_size;
        let mut input = vec![0f32; 2 * backbone];
        gemma_quant::read_f32(&target.weights.embed.storage, token as usize * backbone, &mut input[..backbone]);
        input[..backbone].iter_mut().for_each(|v| *v *= target.config.embed_scale);
        input[backbone..].copy_from_slice(hidden);
        matmul_decode(&input, 1, &self.pre_projection, buf(&mut ws.x, h));
        let segs = [Seg { row0: 0, n: 1, start: pos, item: 0, decode: true, adapter: None, exact: false, media: &[] }];
        let tokens = [token];
        let mut items = [(&tokens[..], cache)];
        for (l, lw) in self.model.weights.layers.iter().enumerate() {
            self.model.block(l, lw, &segs, &mut items, ws, None, None);
        }
        let mut normed = vec![0f32; h];
        rms_norm(&ws.x[..h], &self.model.weights.final_norm, cfg.rms_norm_eps, &mut normed);
        matmul_decode(&normed, 1, &self.post_projection, hidden);
        let vocab = cfg.vocab_size;
        let logits = buf(&mut ws.logits, vocab);
        let head = self.model.weights.head();
        match &self.masked {
            None => matmul_decode(&normed, 1, head, logits),
            Some(m) => masked_logits(m, head, &normed, logits),
        }
        Ok(&ws.logits[..vocab])
    }
}

/// Logits of the tokens of the `top_k` centroids nearest `x`, the others
/// set below all of them (transformers' `Gemma4AssistantMaskedEmbedder`).
fn masked_logits(m: &MaskedHead, head: &Matrix, x: &[f32], logits: &mut [f32]) {
    let c = m.centroids.rows;
    let mut scores = vec![0f32; c];
    matmul_decode(x, 1, &m.centroids, &mut scores);
    let mut order: Vec<usize> = (0..c).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let per = logits.len() / c;
    let mut row = vec![0f32; head.cols];
    let mut picked = Vec::with_capacity(m.top_k * per);
    for &cent in &order[..m.top_k] {
        for &t in &m.ordering[cent * per..(cent + 1) * per] {
            gemma_quant::read_f32(&head.storage, t as usize * head.cols, &mut row);
            picked.push((t as usize, gemma_kernels::dot::dot_f32(x, &row)));
        }
    }
    let floor = picked.iter().map(|p| p.1).fold(f32::INFINITY, f32::min) - 1.0;
    logits.fill(floor);
    for (t, v) in picked {
        logits[t] = v;
    }
}
