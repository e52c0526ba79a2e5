//! Model weights and their loading from Hugging Face safetensors. Naming and
//! storage quirks (name prefixes, `1 + w` norms) are resolved here only.

use crate::config::GemmaConfig;
use gemma_core::{DType, GemmaError, Matrix, Result, Storage};
use gemma_formats::SafetensorsSet;

/// One transformer block's weights. Norm gains already hold `1 + w` in f32.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Pre-attention norm gain `[hidden]`.
    pub attn_norm: Vec<f32>,
    /// Query projection `[heads*head_dim, hidden]`.
    pub q: Matrix,
    /// Key projection `[kv_heads*head_dim, hidden]`.
    pub k: Matrix,
    /// Value projection `[kv_heads*head_dim, hidden]`.
    pub v: Matrix,
    /// Output projection `[hidden, heads*head_dim]`.
    pub o: Matrix,
    /// Per-head query norm gain `[head_dim]` (Gemma 3).
    pub q_norm: Option<Vec<f32>>,
    /// Per-head key norm gain `[head_dim]` (Gemma 3).
    pub k_norm: Option<Vec<f32>>,
    /// Norm on the attention output `[hidden]` (Gemma 2/3).
    pub post_attn_norm: Option<Vec<f32>>,
    /// Pre-feed-forward norm gain `[hidden]`.
    pub ffn_norm: Vec<f32>,
    /// Gate projection `[intermediate, hidden]`.
    pub gate: Matrix,
    /// Up projection `[intermediate, hidden]`.
    pub up: Matrix,
    /// Down projection `[hidden, intermediate]`.
    pub down: Matrix,
    /// Norm on the feed-forward output `[hidden]` (Gemma 2/3).
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding `[vocab, hidden]` (also the output head when tied).
    pub embed: Matrix,
    /// Blocks, in order.
    pub layers: Vec<LayerWeights>,
    /// Final norm gain `[hidden]`.
    pub final_norm: Vec<f32>,
    /// Untied output head `[vocab, hidden]`, if the checkpoint has one.
    pub lm_head: Option<Matrix>,
}

impl Weights {
    /// The output head: the untied one, else the embedding.
    pub fn head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Number of parameters (tied head counted once).
    pub fn parameter_count(&self) -> usize {
        let m = |m: &Matrix| m.rows * m.cols;
        let v = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, Vec::len);
        let mut n = m(&self.embed) + self.final_norm.len() + self.lm_head.as_ref().map_or(0, m);
        for l in &self.layers {
            n += l.attn_norm.len() + l.ffn_norm.len() + m(&l.q) + m(&l.k) + m(&l.v) + m(&l.o) + m(&l.gate) + m(&l.up) + m(&l.down);
            n += v(&l.q_norm) + v(&l.k_norm) + v(&l.post_attn_norm) + v(&l.post_ffn_norm);
        }
        n
    }

    /// Bytes held by the weights in memory.
    pub fn bytes(&self) -> usize {
        let m = |m: &Matrix| m.storage.bytes();
        let v = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, |x| x.len() * 4);
        let mut n = m(&self.embed) + self.final_norm.len() * 4 + self.lm_head.as_ref().map_or(0, m);
        for l in &self.layers {
            n += (l.attn_norm.len() + l.ffn_norm.len()) * 4 + m(&l.q) + m(&l.k) + m(&l.v) + m(&l.o) + m(&l.gate) + m(&l.up) + m(&l.down);
            n += v(&l.q_norm) + v(&l.k_norm) + v(&l.post_attn_norm) + v(&l.post_ffn_norm);
        }
        n
    }

    /// The dtype of the large matrices.
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
}

/// Prefixes under which Gemma checkpoints store the decoder.
const PREFIXES: [&str; 4] = ["model.", "language_model.model.", "model.language_model.", ""];

/// Loads tensors by logical name with shape checks and progress reporting.
struct Loader<'a> {
    set: &'a SafetensorsSet,
    prefix: &'static str,
    dtype: Option<DType>,
    progress: &'a mut dyn FnMut(usize, usize),
    done: usize,
    total: usize,
}

impl Loader<'_> {
    fn step(&mut self) {
        self.done += 1;
        (self.progress)(self.done, self.total);
    }

    fn raw(&mut self, name: &str, expected: &[usize]) -> Result<Storage> {
        let (shape, storage) = self.set.load(name)?;
        if shape != expected {
            return Err(GemmaError::ShapeMismatch { name: name.to_string(), expected: expected.to_vec(), found: shape });
        }
        self.step();
        Ok(storage)
    }

    fn matrix_named(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let mut s = self.raw(name, &[rows, cols])?;
        if let Some(dt) = self.dtype {
            if cols % dt.block_size() != 0 {
                return Err(GemmaError::invalid("dtype", format!("`{name}` has {cols} columns, not a multiple of the {dt} block size {}", dt.block_size())));
            }
            s = gemma_quant::convert(s, dt)?;
        }
        Ok(Matrix::new(rows, cols, s))
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let full = format!("{}{name}", self.prefix);
        self.matrix_named(&full, rows, cols)
    }

    /// A norm weight `w`, returned as the gain `1 + w` in f32.
    fn norm(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let w = gemma_quant::to_f32_vec(&self.raw(&full, &[len])?);
        Ok(w.into_iter().map(|x| 1.0 + x).collect())
    }
}

impl Weights {
    /// Load every weight `cfg` implies from a safetensors checkpoint.
    /// `dtype` converts the matrices at load time (None keeps the file's).
    /// `progress(done, total)` is called after each tensor.
    pub fn from_safetensors(set: &SafetensorsSet, cfg: &GemmaConfig, dtype: Option<DType>, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let prefix = PREFIXES
            .iter()
            .copied()
            .find(|p| set.info(&format!("{p}embed_tokens.weight")).is_some())
            .ok_or_else(|| GemmaError::MissingTensor { name: "model.embed_tokens.weight".into() })?;
        let per_layer = if cfg.qk_norm { 15 } else if cfg.sandwich_norms { 13 } else { 11 };
        let total = 2 + cfg.num_layers() * per_layer + usize::from(!cfg.tie_word_embeddings);
        let mut ld = Loader { set, prefix, dtype, progress, done: 0, total };
        let (h, q, kv, ff, hd) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size, cfg.head_dim);
        let embed = ld.matrix("embed_tokens.weight", cfg.vocab_size, h)?;
        let mut layers = Vec::with_capacity(cfg.num_layers());
        for i in 0..cfg.num_layers() {
            let p = format!("layers.{i}.");
            // Gemma 1 calls its pre-FFN norm `post_attention_layernorm`;
            // Gemma 2/3 use that name for the norm on the attention output.
            let (post_attn_norm, ffn_norm, post_ffn_norm) = if cfg.sandwich_norms {
                (
                    Some(ld.norm(&format!("{p}post_attention_layernorm.weight"), h)?),
                    ld.norm(&format!("{p}pre_feedforward_layernorm.weight"), h)?,
                    Some(ld.norm(&format!("{p}post_feedforward_layernorm.weight"), h)?),
                )
            } else {
                (None, ld.norm(&format!("{p}post_attention_layernorm.weight"), h)?, None)
            };
            let (q_norm, k_norm) = if cfg.qk_norm {
                (Some(ld.norm(&format!("{p}self_attn.q_norm.weight"), hd)?), Some(ld.norm(&format!("{p}self_attn.k_norm.weight"), hd)?))
            } else {
                (None, None)
            };
            layers.push(LayerWeights {
                attn_norm: ld.norm(&format!("{p}input_layernorm.weight"), h)?,
                q: ld.matrix(&format!("{p}self_attn.q_proj.weight"), q, h)?,
                k: ld.matrix(&format!("{p}self_attn.k_proj.weight"), kv, h)?,
                v: ld.matrix(&format!("{p}self_attn.v_proj.weight"), kv, h)?,
                o: ld.matrix(&format!("{p}self_attn.o_proj.weight"), h, q)?,
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm,
                gate: ld.matrix(&format!("{p}mlp.gate_proj.weight"), ff, h)?,
                up: ld.matrix(&format!("{p}mlp.up_proj.weight"), ff, h)?,
                down: ld.matrix(&format!("{p}mlp.down_proj.weight"), h, ff)?,
                post_ffn_norm,
            });
        }
        let final_norm = ld.norm("norm.weight", h)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            let name = ["lm_head.weight", "language_model.lm_head.weight"]
                .into_iter()
                .find(|n| set.info(n).is_some())
                .ok_or_else(|| GemmaError::MissingTensor { name: "lm_head.weight (tie_word_embeddings is false)".into() })?;
            Some(ld.matrix_named(name, cfg.vocab_size, h)?)
        };
        Ok(Self { embed, layers, final_norm, lm_head })
    }
}
