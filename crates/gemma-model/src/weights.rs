//! Model weights and their loading from Hugging Face safetensors. Naming and
//! storage quirks (name prefixes, `1 + w` norms) are resolved here only.

use crate::config::GemmaConfig;
use gemma_core::{Bytes, DType, GemmaError, Matrix, Result, Storage};
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
    /// The whole stream is scaled by this at the end of the layer (Gemma 4).
    pub layer_scalar: Option<f32>,
    /// Per-layer-embedding input of this layer (Gemma 4 E models).
    pub ple: Option<PleLayerWeights>,
    /// Mixture-of-experts block beside the dense MLP (Gemma 4 26B-A4B).
    pub moe: Option<MoeWeights>,
    /// AltUp predict/correct of this layer (Gemma 3n).
    pub altup: Option<AltUpLayerWeights>,
    /// LAuReL residual of this layer (Gemma 3n).
    pub laurel: Option<LaurelWeights>,
}

/// One layer's AltUp weights (Gemma 3n), `S` streams.
#[derive(Debug, Clone)]
pub struct AltUpLayerWeights {
    /// Scale of the corrected active stream feeding the per-layer input `[hidden]`.
    pub correct_output_scale: Vec<f32>,
    /// Correction coefficients `[S, S]` row-major (a Linear S → S).
    pub correction_coefs: Vec<f32>,
    /// Prediction coefficients `[S·S, S]` row-major (a Linear S → S·S).
    pub prediction_coefs: Vec<f32>,
    /// Router `[S, hidden]`.
    pub router: Matrix,
    /// Router input norm gain `[hidden]`.
    pub router_norm: Vec<f32>,
}

/// One layer's LAuReL block (Gemma 3n): `h + norm(right(left(h)))`.
#[derive(Debug, Clone)]
pub struct LaurelWeights {
    /// `[rank, hidden]`.
    pub left: Matrix,
    /// `[hidden, rank]`.
    pub right: Matrix,
    /// Norm after `right` `[hidden]`.
    pub norm: Vec<f32>,
}

/// The model-wide AltUp projections (Gemma 3n): stream `i ≥ 1` is
/// `proj[i-1](x)` after the embedding and `unembed[i-1]` maps it back at the end.
#[derive(Debug, Clone)]
pub struct AltUpWeights {
    /// `[hidden, hidden]` each.
    pub proj: Vec<Matrix>,
    /// `[hidden, hidden]` each.
    pub unembed: Vec<Matrix>,
}

/// One layer's per-layer-embedding input: `x += norm(proj(gelu(gate·x) ⊙ e_l))`.
#[derive(Debug, Clone)]
pub struct PleLayerWeights {
    /// `[P, hidden]`.
    pub gate: Matrix,
    /// `[hidden, P]`.
    pub proj: Matrix,
    /// Norm after the projection `[hidden]`.
    pub norm: Vec<f32>,
}

/// The model-wide per-layer embeddings (Gemma 4 E models).
#[derive(Debug, Clone)]
pub struct PleWeights {
    /// Token table `[per_layer_vocab, layers · P]`.
    pub embed: Matrix,
    /// Projection of the main embedding `[layers · P, hidden]`.
    pub proj: Matrix,
    /// Norm of each layer's projected slice `[P]`.
    pub norm: Vec<f32>,
}

/// One layer's experts and router (Gemma 4 MoE).
#[derive(Debug, Clone)]
pub struct MoeWeights {
    /// Router logits `[experts, hidden]`.
    pub router: Matrix,
    /// Router input scale `[hidden]` (after a scale-free norm).
    pub router_scale: Vec<f32>,
    /// Per-expert output scale `[experts]`.
    pub expert_scale: Vec<f32>,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Each expert's gate and up projections stacked `[2 · moe_ff, hidden]`.
    pub gate_up: Vec<Matrix>,
    /// Each expert's down projection `[hidden, moe_ff]`.
    pub down: Vec<Matrix>,
    /// Norm of the experts' input `[hidden]`.
    pub pre_norm: Vec<f32>,
    /// Norm of the dense MLP's output `[hidden]`.
    pub post_norm_dense: Vec<f32>,
    /// Norm of the experts' output `[hidden]`.
    pub post_norm_experts: Vec<f32>,
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
    /// Per-layer embeddings (Gemma 3n, Gemma 4 E models).
    pub ple: Option<PleWeights>,
    /// AltUp stream projections (Gemma 3n).
    pub altup: Option<AltUpWeights>,
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
            n += v(&l.q_norm) + v(&l.k_norm) + v(&l.post_attn_norm) + v(&l.post_ffn_norm) + usize::from(l.layer_scalar.is_some());
            if let Some(p) = &l.ple {
                n += m(&p.gate) + m(&p.proj) + p.norm.len();
            }
            if let Some(e) = &l.moe {
                n += m(&e.router) + e.router_scale.len() + e.expert_scale.len() + 3 * e.pre_norm.len();
                n += e.gate_up.iter().chain(&e.down).map(m).sum::<usize>();
            }
            if let Some(a) = &l.altup {
                n += a.correct_output_scale.len() + a.correction_coefs.len() + a.prediction_coefs.len() + m(&a.router) + a.router_norm.len();
            }
            if let Some(r) = &l.laurel {
                n += m(&r.left) + m(&r.right) + r.norm.len();
            }
        }
        if let Some(p) = &self.ple {
            n += m(&p.embed) + m(&p.proj) + p.norm.len();
        }
        if let Some(a) = &self.altup {
            n += a.proj.iter().chain(&a.unembed).map(m).sum::<usize>();
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
            if let Some(p) = &l.ple {
                n += m(&p.gate) + m(&p.proj) + p.norm.len() * 4;
            }
            if let Some(e) = &l.moe {
                n += m(&e.router) + (e.router_scale.len() + e.expert_scale.len() + 3 * e.pre_norm.len()) * 4;
                n += e.gate_up.iter().chain(&e.down).map(m).sum::<usize>();
            }
            n += l.altup.as_ref().map_or(0, |a| (a.correct_output_scale.len() + a.correction_coefs.len() + a.prediction_coefs.len() + a.router_norm.len()) * 4 + m(&a.router));
            n += l.laurel.as_ref().map_or(0, |r| m(&r.left) + m(&r.right) + r.norm.len() * 4);
        }
        if let Some(p) = &self.ple {
            n += m(&p.embed) + m(&p.proj) + p.norm.len() * 4;
        }
        n += self.altup.as_ref().map_or(0, |a| a.proj.iter().chain(&a.unembed).map(m).sum::<usize>());
        n
    }

    /// Bytes read from memory per decoded token: every block matrix and norm
    /// plus the output head (the embedding contributes one row, ignored).
    pub fn bytes_per_token(&self) -> usize {
        let m = |m: &Matrix| m.storage.bytes();
        let mut n = m(self.head()) + self.final_norm.len() * 4;
        for l in &self.layers {
            n += (l.attn_norm.len() + l.ffn_norm.len()) * 4 + m(&l.q) + m(&l.k) + m(&l.v) + m(&l.o) + m(&l.gate) + m(&l.up) + m(&l.down);
            if let Some(p) = &l.ple {
                n += m(&p.gate) + m(&p.proj);
            }
            // Only the routed experts are read per token.
            if let Some(e) = &l.moe {
                n += m(&e.router) + e.gate_up.iter().chain(&e.down).map(m).sum::<usize>() * e.top_k / e.gate_up.len().max(1);
            }
            n += l.altup.as_ref().map_or(0, |a| m(&a.router));
            n += l.laurel.as_ref().map_or(0, |r| m(&r.left) + m(&r.right));
        }
        if let Some(p) = &self.ple {
            n += m(&p.proj);
        }
        n += self.altup.as_ref().map_or(0, |a| a.proj.iter().chain(&a.unembed).map(m).sum::<usize>());
        n
    }

    /// The dtype of the token embedding (see [`Weights::dtype_mix`] for all matrices).
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Every weight matrix, once.
    pub fn for_each_matrix(&self, f: &mut dyn FnMut(&Matrix)) {
        f(&self.embed);
        if let Some(h) = &self.lm_head {
            f(h);
        }
        for l in &self.layers {
            for m in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                f(m);
            }
            if let Some(p) = &l.ple {
                f(&p.gate);
                f(&p.proj);
            }
            if let Some(e) = &l.moe {
                f(&e.router);
                e.gate_up.iter().chain(&e.down).for_each(&mut *f);
            }
            if let Some(a) = &l.altup {
                f(&a.router);
            }
            if let Some(r) = &l.laurel {
                f(&r.left);
                f(&r.right);
            }
        }
        if let Some(p) = &self.ple {
            f(&p.embed);
            f(&p.proj);
        }
        if let Some(a) = &self.altup {
            a.proj.iter().chain(&a.unembed).for_each(&mut *f);
        }
    }

    /// Parameters per storage dtype over all matrices, largest share first:
    /// what a quantization mix such as Q4_K_M really holds.
    pub fn dtype_mix(&self) -> Vec<(DType, usize)> {
        let mut mix: Vec<(DType, usize)> = Vec::new();
        self.for_each_matrix(&mut |m| {
            let n = m.rows * m.cols;
            match mix.iter_mut().find(|(d, _)| *d == m.dtype()) {
                Some((_, c)) => *c += n,
                None => mix.push((m.dtype(), n)),
            }
        });
        mix.sort_by_key(|m| std::cmp::Reverse(m.1));
        mix
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
    /// Gemma 4: the layer's output scale `[1]`.
    LayerScalar,
    /// Gemma 4 per-layer input gate `[P, hidden]`.
    PleGate,
    /// Gemma 4 per-layer input projection `[hidden, P]`.
    PleProj,
    /// Gemma 4 norm after the per-layer input projection.
    PleNorm,
    /// Gemma 4 per-layer embedding table.
    PleEmbed,
    /// Gemma 4 projection of the embedding to the per-layer inputs.
    PleModelProj,
    /// Gemma 4 norm of each per-layer input slice.
    PleModelNorm,
    /// Gemma 4 MoE router projection.
    RouterProj,
    /// Gemma 4 MoE router input scale.
    RouterScale,
    /// Gemma 4 MoE per-expert output scale.
    ExpertScale,
    /// Gemma 4 packed expert gate/up projections `[experts, 2·ff, hidden]`.
    ExpertsGateUp,
    /// Gemma 4 packed expert down projections `[experts, hidden, ff]`.
    ExpertsDown,
    /// Gemma 4 MoE: norm of the experts' input.
    MoePreNorm,
    /// Gemma 4 MoE: norm of the dense MLP's output.
    MoePostNormDense,
    /// Gemma 4 MoE: norm of the experts' output.
    MoePostNormExperts,
    /// Gemma 3n: projection to AltUp stream `l + 1` (model-wide, `l` indexes it).
    AltUpProj,
    /// Gemma 3n: projection back from AltUp stream `l + 1` (model-wide).
    AltUpUnembed,
    /// Gemma 3n AltUp: scale of the corrected active stream.
    AltUpCorrectScale,
    /// Gemma 3n AltUp: correction coefficients `[S, S]`.
    AltUpCorrectionCoefs,
    /// Gemma 3n AltUp: prediction coefficients `[S·S, S]`.
    AltUpPredictionCoefs,
    /// Gemma 3n AltUp: router `[S, hidden]`.
    AltUpRouter,
    /// Gemma 3n AltUp: router input norm.
    AltUpRouterNorm,
    /// Gemma 3n LAuReL down projection `[rank, hidden]`.
    LaurelLeft,
    /// Gemma 3n LAuReL up projection `[hidden, rank]`.
    LaurelRight,
    /// Gemma 3n LAuReL output norm.
    LaurelNorm,
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
                    Part::LayerScalar => format!("{prefix}layers.{l}.layer_scalar"),
                    Part::PleGate => layer("per_layer_input_gate"),
                    Part::PleProj => layer("per_layer_projection"),
                    Part::PleNorm => layer("post_per_layer_input_norm"),
                    Part::PleEmbed => format!("{prefix}embed_tokens_per_layer.weight"),
                    Part::PleModelProj => format!("{prefix}per_layer_model_projection.weight"),
                    Part::PleModelNorm => format!("{prefix}per_layer_projection_norm.weight"),
                    Part::RouterProj => layer("router.proj"),
                    Part::RouterScale => format!("{prefix}layers.{l}.router.scale"),
                    Part::ExpertScale => format!("{prefix}layers.{l}.router.per_expert_scale"),
                    Part::ExpertsGateUp => format!("{prefix}layers.{l}.experts.gate_up_proj"),
                    Part::ExpertsDown => format!("{prefix}layers.{l}.experts.down_proj"),
                    Part::MoePreNorm => layer("pre_feedforward_layernorm_2"),
                    Part::MoePostNormDense => layer("post_feedforward_layernorm_1"),
                    Part::MoePostNormExperts => layer("post_feedforward_layernorm_2"),
                    Part::AltUpProj => format!("{prefix}altup_projections.{l}.weight"),
                    Part::AltUpUnembed => format!("{prefix}altup_unembed_projections.{l}.weight"),
                    Part::AltUpCorrectScale => format!("{prefix}layers.{l}.altup.correct_output_scale"),
                    Part::AltUpCorrectionCoefs => layer("altup.correction_coefs"),
                    Part::AltUpPredictionCoefs => layer("altup.prediction_coefs"),
                    Part::AltUpRouter => layer("altup.modality_router"),
                    Part::AltUpRouterNorm => layer("altup.router_norm"),
                    Part::LaurelLeft => layer("laurel.linear_left"),
                    Part::LaurelRight => layer("laurel.linear_right"),
                    Part::LaurelNorm => layer("laurel.post_laurel_norm"),
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
                    // Gemma 4 (llama.cpp's gemma4 names).
                    Part::LayerScalar => layer("layer_output_scale"),
                    Part::PleGate => layer("inp_gate"),
                    Part::PleProj => layer("proj"),
                    Part::PleNorm => layer("post_norm"),
                    Part::PleEmbed => "per_layer_token_embd.weight".to_string(),
                    Part::PleModelProj => "per_layer_model_proj.weight".to_string(),
                    Part::PleModelNorm => "per_layer_proj_norm.weight".to_string(),
                    Part::RouterProj => layer("ffn_gate_inp"),
                    Part::RouterScale => format!("blk.{l}.ffn_gate_inp.scale"),
                    Part::ExpertScale => format!("blk.{l}.ffn_down_exps.scale"),
                    Part::ExpertsGateUp => layer("ffn_gate_up_exps"),
                    Part::ExpertsDown => layer("ffn_down_exps"),
                    Part::MoePreNorm => layer("pre_ffw_norm_2"),
                    Part::MoePostNormDense => layer("post_ffw_norm_1"),
                    Part::MoePostNormExperts => layer("post_ffw_norm_2"),
                    // Gemma 3n (llama.cpp's gemma3n names; the stream
                    // projections are one `[S-1, H, H]` stack each).
                    Part::AltUpProj => "altup_proj.weight".to_string(),
                    Part::AltUpUnembed => "altup_unembd_proj.weight".to_string(),
                    Part::AltUpCorrectScale => layer("altup_correct_scale"),
                    Part::AltUpCorrectionCoefs => layer("altup_correct_coef"),
                    Part::AltUpPredictionCoefs => layer("altup_predict_coef"),
                    Part::AltUpRouter => layer("altup_router"),
                    Part::AltUpRouterNorm => layer("altup_router_norm"),
                    Part::LaurelLeft => layer("laurel_l"),
                    Part::LaurelRight => layer("laurel_r"),
                    Part::LaurelNorm => layer("laurel_post_norm"),
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
    /// None: every tensor is a zero placeholder of the expected shape.
    source: Option<&'a TensorSource<'a>>,
    naming: Naming,
    sandwich: bool,
    /// Added to stored norm weights (`1` for Gemma 1–3 HF files).
    norm_offset: f32,
    dtype: Option<DType>,
    progress: &'a mut dyn FnMut(usize, usize),
    done: usize,
    total: usize,
}

impl Loader<'_> {
    fn raw(&mut self, name: &str, expected: &[usize]) -> Result<Storage> {
        let (shape, storage) = match self.source {
            Some(source) => source(name)?,
            None => {
                let len = expected.iter().product::<usize>();
                let bytes = Bytes::zeroed(len * 4).map_err(|e| GemmaError::Unsupported(format!("cannot reserve address space for `{name}`: {e}")))?;
                (expected.to_vec(), Storage::Raw { dtype: DType::F32, len, bytes })
            }
        };
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

    /// A norm, returned as its gain in f32 (`1 + w` for Gemma 1–3).
    fn norm(&mut self, part: Part, l: usize, len: usize) -> Result<Vec<f32>> {
        let off = self.norm_offset;
        Ok(self.vector(part, l, len)?.into_iter().map(|x| off + x).collect())
    }

    /// A vector, as stored, in f32.
    fn vector(&mut self, part: Part, l: usize, len: usize) -> Result<Vec<f32>> {
        let name = self.naming.name(part, l, self.sandwich);
        Ok(gemma_quant::to_f32_vec(&self.raw(&name, &[len])?))
    }

    /// A small matrix `[rows, cols]` as stored, in f32 row-major.
    fn flat(&mut self, part: Part, l: usize, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let name = self.naming.name(part, l, self.sandwich);
        Ok(gemma_quant::to_f32_vec(&self.raw(&name, &[rows, cols])?))
    }

    /// A stack of `n` matrices `[n, rows, cols]` (packed experts), split:
    /// views of the memory map when they keep their stored type (no copy:
    /// the 26B-A4B's experts are 90% of its bytes), else converted.
    fn stack(&mut self, part: Part, l: usize, n: usize, rows: usize, cols: usize) -> Result<Vec<Matrix>> {
        let name = self.naming.name(part, l, self.sandwich);
        let s = self.raw(&name, &[n, rows, cols])?;
        let stored = s.dtype();
        let keep = self.dtype.is_none_or(|d| gemma_quant::fallback(d, cols) == stored);
        if let Storage::Raw { bytes: Bytes::Mapped { map, start, .. }, .. } = &s {
            if keep && rows * cols % stored.block_size() == 0 {
                let each = stored.bytes_for(rows * cols);
                return Ok((0..n)
                    .map(|e| {
                        let bytes = Bytes::Mapped { map: map.clone(), start: start + e * each, len: each };
                        Matrix::new(rows, cols, Storage::Raw { dtype: stored, len: rows * cols, bytes })
                    })
                    .collect());
            }
        }
        (0..n)
            .map(|e| {
                let mut v = vec![0f32; rows * cols];
                gemma_quant::read_f32(&s, e * rows * cols, &mut v);
                let want = self.dtype.map(|d| gemma_quant::fallback(d, cols)).filter(|d| d.is_quantized() || !stored.is_quantized()).unwrap_or(stored);
                let st = if want == DType::F32 { Storage::F32(v) } else { gemma_quant::convert(Storage::F32(v), want)? };
                Ok(Matrix::new(rows, cols, st))
            })
            .collect()
    }

    /// An empty `[0, cols]` matrix (a projection the layer does not have).
    fn none(cols: usize) -> Matrix {
        Matrix::new(0, cols, Storage::F32(Vec::new()))
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
        Self::load_from(Some(source), naming, cfg, has_lm_head, dtype, progress)
    }

    /// Every weight `cfg` implies, as f32 zeros that cost address space but
    /// no memory: the shapes of a model without its values (what `gemma
    /// synth` walks to write a random model of a published shape).
    pub fn placeholders(cfg: &GemmaConfig) -> Result<Self> {
        Self::load_from(None, Naming::Gguf, cfg, !cfg.tie_word_embeddings, None, &mut |_, _| {})
    }

    fn load_from(
        source: Option<&TensorSource>,
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
        let extra = usize::from(cfg.layer_scalar) + if cfg.per_layer_input_size > 0 { 3 } else { 0 } + if cfg.moe.is_some() { 8 } else { 0 };
        let shared = cfg.layers.iter().filter(|l| l.kv_source.is_some()).count() * 3 + cfg.layers.iter().filter(|l| l.k_eq_v).count();
        let extra = extra + if cfg.altup.is_some() { 5 } else { 0 } + if cfg.laurel_rank > 0 { 3 } else { 0 };
        let model_wide = if cfg.per_layer_input_size > 0 { 3 } else { 0 } + cfg.altup.map_or(0, |a| 2 * (a.streams - 1));
        let total = 2 + cfg.num_layers() * (per_layer + extra) - shared + usize::from(untied) + model_wide;
        let norm_offset = if naming.norms_hold_one_plus_w() { 0.0 } else { cfg.norm_offset };
        let mut ld = Loader { source, naming, sandwich: cfg.sandwich_norms, norm_offset, dtype, progress, done: 0, total };
        let h = cfg.hidden_size;
        let embed = ld.matrix(Part::Embed, 0, cfg.vocab_size, h)?;
        let mut layers = Vec::with_capacity(cfg.num_layers());
        let p = cfg.per_layer_input_size;
        for (l, spec) in cfg.layers.iter().enumerate() {
            let (q, kv, ff, hd) = (cfg.layer_q_dim(l), cfg.layer_kv_dim(l), spec.intermediate_size, spec.head_dim);
            let own_kv = spec.kv_source.is_none();
            let (post_attn_norm, post_ffn_norm) =
                if cfg.sandwich_norms { (Some(ld.norm(Part::PostAttnNorm, l, h)?), Some(ld.norm(Part::PostFfnNorm, l, h)?)) } else { (None, None) };
            let q_norm = if cfg.qk_norm { Some(ld.norm(Part::QNorm, l, hd)?) } else { None };
            let k_norm = if cfg.qk_norm && own_kv { Some(ld.norm(Part::KNorm, l, hd)?) } else { None };
            let ple = if p > 0 {
                Some(PleLayerWeights { gate: ld.matrix(Part::PleGate, l, p, h)?, proj: ld.matrix(Part::PleProj, l, h, p)?, norm: ld.norm(Part::PleNorm, l, h)? })
            } else {
                None
            };
            let moe = match cfg.moe {
                Some(m) => Some(MoeWeights {
                    top_k: m.top_k,
                    router: ld.matrix(Part::RouterProj, l, m.experts, h)?,
                    router_scale: ld.vector(Part::RouterScale, l, h)?,
                    expert_scale: ld.vector(Part::ExpertScale, l, m.experts)?,
                    gate_up: ld.stack(Part::ExpertsGateUp, l, m.experts, 2 * m.intermediate_size, h)?,
                    down: ld.stack(Part::ExpertsDown, l, m.experts, h, m.intermediate_size)?,
                    pre_norm: ld.norm(Part::MoePreNorm, l, h)?,
                    post_norm_dense: ld.norm(Part::MoePostNormDense, l, h)?,
                    post_norm_experts: ld.norm(Part::MoePostNormExperts, l, h)?,
                }),
                None => None,
            };
            let altup = match cfg.altup {
                Some(a) => Some(AltUpLayerWeights {
                    correct_output_scale: ld.vector(Part::AltUpCorrectScale, l, h)?,
                    correction_coefs: ld.flat(Part::AltUpCorrectionCoefs, l, a.streams, a.streams)?,
                    prediction_coefs: ld.flat(Part::AltUpPredictionCoefs, l, a.streams * a.streams, a.streams)?,
                    router: ld.matrix(Part::AltUpRouter, l, a.streams, h)?,
                    router_norm: ld.norm(Part::AltUpRouterNorm, l, h)?,
                }),
                None => None,
            };
            let laurel = if cfg.laurel_rank > 0 {
                let r = cfg.laurel_rank;
                Some(LaurelWeights { left: ld.matrix(Part::LaurelLeft, l, r, h)?, right: ld.matrix(Part::LaurelRight, l, h, r)?, norm: ld.norm(Part::LaurelNorm, l, h)? })
            } else {
                None
            };
            layers.push(LayerWeights {
                attn_norm: ld.norm(Part::AttnNorm, l, h)?,
                q: ld.matrix(Part::Q, l, q, h)?,
                k: if own_kv { ld.matrix(Part::K, l, kv, h)? } else { Loader::none(h) },
                v: if own_kv && !spec.k_eq_v { ld.matrix(Part::V, l, kv, h)? } else { Loader::none(h) },
                o: ld.matrix(Part::O, l, h, q)?,
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm: ld.norm(Part::FfnNorm, l, h)?,
                gate: ld.matrix(Part::Gate, l, ff, h)?,
                up: ld.matrix(Part::Up, l, ff, h)?,
                down: ld.matrix(Part::Down, l, h, ff)?,
                post_ffn_norm,
                layer_scalar: if cfg.layer_scalar { Some(ld.vector(Part::LayerScalar, l, 1)?[0]) } else { None },
                ple,
                moe,
                altup,
                laurel,
            });
        }
        let ple = if p > 0 {
            let lp = cfg.num_layers() * p;
            Some(PleWeights {
                embed: ld.matrix(Part::PleEmbed, 0, cfg.per_layer_vocab_size, lp)?,
                proj: ld.matrix(Part::PleModelProj, 0, lp, h)?,
                norm: ld.norm(Part::PleModelNorm, 0, p)?,
            })
        } else {
            None
        };
        let altup = match cfg.altup {
            // GGUF stacks the stream projections; Hugging Face names each.
            Some(a) if naming == Naming::Gguf && a.streams > 1 => {
                let proj = ld.stack(Part::AltUpProj, 0, a.streams - 1, h, h)?;
                let unembed = ld.stack(Part::AltUpUnembed, 0, a.streams - 1, h, h)?;
                Some(AltUpWeights { proj, unembed })
            }
            Some(a) => {
                let proj = (0..a.streams - 1).map(|i| ld.matrix(Part::AltUpProj, i, h, h)).collect::<Result<Vec<_>>>()?;
                let unembed = (0..a.streams - 1).map(|i| ld.matrix(Part::AltUpUnembed, i, h, h)).collect::<Result<Vec<_>>>()?;
                Some(AltUpWeights { proj, unembed })
            }
            None => None,
        };
        let final_norm = ld.norm(Part::FinalNorm, 0, h)?;
        let lm_head = if untied { Some(ld.matrix(Part::LmHead, 0, cfg.vocab_size, h)?) } else { None };
        Ok(Self { embed, layers, final_norm, lm_head, ple, altup })
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
