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

    /// Bytes read from memory per decoded token: every block matrix and norm
    /// plus the output head (the embedding contributes one row, ignored).
    pub fn bytes_per_token(&self) -> usize {
        let m = |m: &Matrix| m.storage.bytes();
        let mut n = m(self.head()) + self.final_norm.len() * 4;
        for l in &self.layers {
            n += (l.attn_norm.len() + l.ffn_norm.len()) * 4 + m(&l.q) + m(&l.k) + m(&l.v) + m(&l.o) + m(&l.gate) + m(&l.up) + m(&l.down);
        }
        n
    }

    /// The dtype of the large matrices.
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
}

/// Logical weights of a checkpoint, independent of file naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Token embedding.
    Embed,
    /// Final norm.
    FinalNorm,
    /// Untied output head.
    LmHead,
    /// Pre-attention norm.
    AttnNorm,
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// Query head norm.
    QNorm,
    /// Key head norm.
    KNorm,
    /// Norm on the attention output.
    PostAttnNorm,
    /// Pre-feed-forward norm.
    FfnNorm,
    /// Gate projection.
    Gate,
    /// Up projection.
    Up,
    /// Down projection.
    Down,
    /// Norm on the feed-forward output.
    PostFfnNorm,
}

/// How a checkpoint format names tensors and stores norms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face: `{prefix}layers.N.self_attn.q_proj.weight`, norms hold `w`.
    HuggingFace {
        /// Decoder prefix, e.g. `model.` or `language_model.model.`.
        prefix: &'static str,
    },
    /// llama.cpp GGUF: `blk.N.attn_q.weight`, norms already hold `1 + w`.
    Gguf,
}

/// Decoder prefixes under which Hugging Face Gemma checkpoints store weights.
pub const HF_PREFIXES: [&str; 4] = ["model.", "language_model.model.", "model.language_model.", ""];

impl Naming {
    /// The file's name for a logical weight (of layer `l` for block parts).
    pub fn name(self, part: Part, l: usize, sandwich: bool) -> String {
        match self {
            Naming::HuggingFace { prefix } => {
                let layer = |s: &str| format!("{prefix}layers.{l}.{s}.weight");
                match part {
                    Part::Embed => format!("{prefix}embed_tokens.weight"),
                    Part::FinalNorm => format!("{prefix}norm.weight"),
                    Part::LmHead => "lm_head.weight".to_string(),
                    Part::AttnNorm => layer("input_layernorm"),
                    Part::Q => layer("self_attn.q_proj"),
                    Part::K => layer("self_attn.k_proj"),
                    Part::V => layer("self_attn.v_proj"),
                    Part::O => layer("self_attn.o_proj"),
                    Part::QNorm => layer("self_attn.q_norm"),
                    Part::KNorm => layer("self_attn.k_norm"),
                    Part::PostAttnNorm => layer("post_attention_layernorm"),
                    // Gemma 1 calls its pre-FFN norm `post_attention_layernorm`.
                    Part::FfnNorm if !sandwich => layer("post_attention_layernorm"),
                    Part::FfnNorm => layer("pre_feedforward_layernorm"),
                    Part::Gate => layer("mlp.gate_proj"),
                    Part::Up => layer("mlp.up_proj"),
                    Part::Down => layer("mlp.down_proj"),
                    Part::PostFfnNorm => layer("post_feedforward_layernorm"),
                }
            }
            Naming::Gguf => {
                let layer = |s: &str| format!("blk.{l}.{s}.weight");
                match part {
                    Part::Embed => "token_embd.weight".to_string(),
                    Part::FinalNorm => "output_norm.weight".to_string(),
                    Part::LmHead => "output.weight".to_string(),
                    Part::AttnNorm => layer("attn_norm"),
                    Part::Q => layer("attn_q"),
                    Part::K => layer("attn_k"),
                    Part::V => layer("attn_v"),
                    Part::O => layer("attn_output"),
                    Part::QNorm => layer("attn_q_norm"),
                    Part::KNorm => layer("attn_k_norm"),
                    Part::PostAttnNorm => layer("post_attention_norm"),
                    Part::FfnNorm => layer("ffn_norm"),
                    Part::Gate => layer("ffn_gate"),
                    Part::Up => layer("ffn_up"),
                    Part::Down => layer("ffn_down"),
                    Part::PostFfnNorm => layer("post_ffw_norm"),
                }
            }
        }
    }

    /// True when stored norm weights already include the `+1`.
    fn norms_hold_one_plus_w(self) -> bool {
        matches!(self, Naming::Gguf)
    }
}

/// A source of named tensors: returns `(shape outermost-first, storage)`.
pub type TensorSource<'a> = dyn Fn(&str) -> Result<(Vec<usize>, Storage)> + 'a;

/// Loads logical weights with shape checks and progress reporting.
struct Loader<'a> {
    source: &'a TensorSource<'a>,
    naming: Naming,
    sandwich: bool,
    dtype: Option<DType>,
    progress: &'a mut dyn FnMut(usize, usize),
    done: usize,
    total: usize,
}

impl Loader<'_> {
    fn raw(&mut self, name: &str, expected: &[usize]) -> Result<Storage> {
        let (shape, storage) = (self.source)(name)?;
        if shape != expected {
            return Err(GemmaError::ShapeMismatch { name: name.to_string(), expected: expected.to_vec(), found: shape });
        }
        self.done += 1;
        (self.progress)(self.done, self.total);
        Ok(storage)
    }

    fn matrix(&mut self, part: Part, l: usize, rows: usize, cols: usize) -> Result<Matrix> {
        let name = self.naming.name(part, l, self.sandwich);
        let mut s = self.raw(&name, &[rows, cols])?;
        if let Some(want) = self.dtype {
            // Rows that are not whole blocks of `want` take llama.cpp's
            // fallback type (Gemma 3 270M's 640 columns: Q4_K → Q5_0); when
            // not even that fits, the matrix keeps its stored type (an f16
            // fallback would overflow on Gemma).
            let dt = gemma_quant::fallback(want, cols);
            if dt == want || dt.is_quantized() {
                s = gemma_quant::convert(s, dt)?;
            }
        }
        Ok(Matrix::new(rows, cols, s))
    }

    /// A norm, returned as the gain `1 + w` in f32.
    fn norm(&mut self, part: Part, l: usize, len: usize) -> Result<Vec<f32>> {
        let name = self.naming.name(part, l, self.sandwich);
        let w = gemma_quant::to_f32_vec(&self.raw(&name, &[len])?);
        Ok(if self.naming.norms_hold_one_plus_w() { w } else { w.into_iter().map(|x| 1.0 + x).collect() })
    }
}

impl Weights {
    /// Load every weight `cfg` implies from `source`, named by `naming`.
    /// `dtype` converts the matrices at load time (None keeps the file's);
    /// `progress(done, total)` is called after each tensor.
    pub fn load(
        source: &TensorSource,
        naming: Naming,
        cfg: &GemmaConfig,
        has_lm_head: bool,
        dtype: Option<DType>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let per_layer = if cfg.qk_norm {
            15
        } else if cfg.sandwich_norms {
            13
        } else {
            11
        };
        let untied = !cfg.tie_word_embeddings || has_lm_head;
        let total = 2 + cfg.num_layers() * per_layer + usize::from(untied);
        let mut ld = Loader { source, naming, sandwich: cfg.sandwich_norms, dtype, progress, done: 0, total };
        let (h, q, kv, ff, hd) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size, cfg.head_dim);
        let embed = ld.matrix(Part::Embed, 0, cfg.vocab_size, h)?;
        let mut layers = Vec::with_capacity(cfg.num_layers());
        for l in 0..cfg.num_layers() {
            let (post_attn_norm, post_ffn_norm) =
                if cfg.sandwich_norms { (Some(ld.norm(Part::PostAttnNorm, l, h)?), Some(ld.norm(Part::PostFfnNorm, l, h)?)) } else { (None, None) };
            let (q_norm, k_norm) = if cfg.qk_norm { (Some(ld.norm(Part::QNorm, l, hd)?), Some(ld.norm(Part::KNorm, l, hd)?)) } else { (None, None) };
            layers.push(LayerWeights {
                attn_norm: ld.norm(Part::AttnNorm, l, h)?,
                q: ld.matrix(Part::Q, l, q, h)?,
                k: ld.matrix(Part::K, l, kv, h)?,
                v: ld.matrix(Part::V, l, kv, h)?,
                o: ld.matrix(Part::O, l, h, q)?,
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm: ld.norm(Part::FfnNorm, l, h)?,
                gate: ld.matrix(Part::Gate, l, ff, h)?,
                up: ld.matrix(Part::Up, l, ff, h)?,
                down: ld.matrix(Part::Down, l, h, ff)?,
                post_ffn_norm,
            });
        }
        let final_norm = ld.norm(Part::FinalNorm, 0, h)?;
        let lm_head = if untied { Some(ld.matrix(Part::LmHead, 0, cfg.vocab_size, h)?) } else { None };
        Ok(Self { embed, layers, final_norm, lm_head })
    }

    /// Load from a Hugging Face safetensors checkpoint.
    pub fn from_safetensors(set: &SafetensorsSet, cfg: &GemmaConfig, dtype: Option<DType>, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let prefix = HF_PREFIXES
            .iter()
            .copied()
            .find(|p| set.info(&format!("{p}embed_tokens.weight")).is_some())
            .ok_or_else(|| GemmaError::MissingTensor { name: "model.embed_tokens.weight".into() })?;
        // Multimodal checkpoints keep the head under language_model.
        let head = ["lm_head.weight", "language_model.lm_head.weight"].into_iter().find(|n| set.info(n).is_some());
        if !cfg.tie_word_embeddings && head.is_none() {
            return Err(GemmaError::MissingTensor { name: "lm_head.weight (tie_word_embeddings is false)".into() });
        }
        let source = |name: &str| {
            let name = if name == "lm_head.weight" { head.unwrap_or(name) } else { name };
            set.load(name)
        };
        // A tied checkpoint that still ships lm_head: the embedding is the head.
        Self::load(&source, Naming::HuggingFace { prefix }, cfg, !cfg.tie_word_embeddings, dtype, progress)
    }
}
