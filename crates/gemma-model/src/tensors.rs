//! The one tensor table: every weight any Gemma text generation holds, one
//! row each, with its Hugging Face name, llama.cpp GGUF name, PEFT module
//! name, shape rule (which also says in which layers it exists), how it is
//! held in memory and how `gemma quantize` stores it. Loading, counting,
//! bytes, quantizing, merging and LoRA export all walk this table (through
//! `Weights::visit`, `visit.rs`, once loaded); adding a tensor is one row
//! here plus its field in `Weights` and its arm in `Weights::get`.
//!
//! Rows are in GGUF file order (the order `gemma quantize` writes): the
//! model-wide rows before the first layer row are written first, then each
//! layer's rows, then the remaining model-wide rows.

use crate::config::GemmaConfig;
use gemma_core::Matrix;

/// Logical weights of a checkpoint, independent of file naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Gemma 3n: projections to AltUp streams `1..S` (model-wide).
    AltUpProj,
    /// Gemma 3n: projections back from AltUp streams `1..S` (model-wide).
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

/// The seven projections of a block that LoRA adapts, in the order of
/// `lora::LayerLora::parts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proj {
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// Feed-forward gate projection.
    Gate,
    /// Feed-forward up projection.
    Up,
    /// Feed-forward down projection.
    Down,
}

impl Proj {
    /// Every projection, in slot order.
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];

    /// Slot index (position in [`Proj::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The weight this projection multiplies.
    pub fn part(self) -> Part {
        match self {
            Proj::Q => Part::Q,
            Proj::K => Part::K,
            Proj::V => Part::V,
            Proj::O => Part::O,
            Proj::Gate => Part::Gate,
            Proj::Up => Part::Up,
            Proj::Down => Part::Down,
        }
    }

    /// Its PEFT module name (`q_proj`), from the table.
    pub fn peft_name(self) -> &'static str {
        spec(self.part()).peft.unwrap_or("")
    }

    /// The projection a PEFT module name (`q_proj`) targets.
    pub fn from_peft(name: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.peft_name() == name)
    }

    /// `(in, out)` features of this projection in layer `l` of `cfg`.
    pub fn features(self, cfg: &GemmaConfig, l: usize) -> (usize, usize) {
        let (h, q, kv, ff) = (cfg.hidden_size, cfg.layer_q_dim(l), cfg.layer_kv_dim(l), cfg.layers[l].intermediate_size);
        match self {
            Proj::Q => (h, q),
            Proj::K | Proj::V => (h, kv),
            Proj::O => (q, h),
            Proj::Gate | Proj::Up => (h, ff),
            Proj::Down => (ff, h),
        }
    }
}

/// Where a tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Once per model (`{l}` is 0, or the stream for per-stream Hugging Face names).
    Model,
    /// Once per layer (in the layers whose shape rule gives a shape).
    Layer,
}

/// How a tensor is held in memory once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A weight matrix `[rows, cols]` in its stored (or converted) type.
    Matrix,
    /// `[n, rows, cols]`: `n` matrices stored as one tensor (packed experts).
    Stack,
    /// `[n, rows, cols]` stacked in GGUF, one `[rows, cols]` tensor per
    /// index `{l}` in Hugging Face files (AltUp's stream projections).
    Streams,
    /// A norm gain, held in f32 as the gain applied (`1 + w` for Gemma 1–3:
    /// the config's `norm_offset` is added to what Hugging Face files store).
    Norm,
    /// A vector or small matrix in f32, as stored.
    Vector,
}

/// How `gemma quantize` stores a matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantClass {
    /// The token embedding's type (a token table).
    Embedding,
    /// The output head's type.
    Head,
    /// The mix's type for a projection of this role (its per-layer rules).
    Weight(Proj),
    /// Kept in f32 (routers and AltUp coefficients, as llama.cpp's converter keeps them).
    Float,
    /// A vector: always f32.
    Vector,
}

/// One row of the tensor table.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec {
    /// The logical weight.
    pub part: Part,
    /// Hugging Face name: `{p}` the decoder prefix (`model.`), `{l}` the layer.
    pub hf: &'static str,
    /// llama.cpp GGUF name: `{l}` the layer.
    pub gguf: &'static str,
    /// PEFT module name, for the projections LoRA adapts.
    pub peft: Option<&'static str>,
    /// Once per model or per layer.
    pub scope: Scope,
    /// How it is held once loaded.
    pub form: Form,
    /// How `gemma quantize` stores it.
    pub quant: QuantClass,
    /// Its shape in layer `l` (outermost first), or None where the model or
    /// that layer has no such tensor.
    pub shape: fn(&GemmaConfig, usize) -> Option<Vec<usize>>,
}

impl TensorSpec {
    /// Its Hugging Face name in layer (or stream) `l` under `prefix`.
    pub fn hf_name(&self, prefix: &str, l: usize) -> String {
        self.hf.replace("{p}", prefix).replace("{l}", &l.to_string())
    }

    /// Its GGUF name in layer `l`.
    pub fn gguf_name(&self, l: usize) -> String {
        self.gguf.replace("{l}", &l.to_string())
    }

    /// Elements of this tensor in layer `l` of `cfg` (0 where absent).
    pub fn numel(&self, cfg: &GemmaConfig, l: usize) -> usize {
        (self.shape)(cfg, l).map_or(0, |s| s.iter().product())
    }

    /// The layer indices this row is visited at: `0` for model-wide rows,
    /// every layer for per-layer rows.
    pub fn indices(&self, cfg: &GemmaConfig) -> std::ops::Range<usize> {
        match self.scope {
            Scope::Model => 0..1,
            Scope::Layer => 0..cfg.num_layers(),
        }
    }
}

/// A loaded tensor, as [`Weights::visit`] hands it out.
#[derive(Debug, Clone, Copy)]
pub enum Tensor<'a> {
    /// A matrix (also one item of a stack).
    Matrix(&'a Matrix),
    /// A stack of matrices (`Form::Stack` / `Form::Streams`).
    Stack(&'a [Matrix]),
    /// A vector or small row-major matrix in f32 (norms hold the applied gain).
    Vector(&'a [f32]),
}

impl Tensor<'_> {
    /// Number of parameters.
    pub fn numel(&self) -> usize {
        match self {
            Tensor::Matrix(m) => m.rows * m.cols,
            Tensor::Stack(ms) => ms.iter().map(|m| m.rows * m.cols).sum(),
            Tensor::Vector(v) => v.len(),
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Tensor::Matrix(m) => m.storage.bytes(),
            Tensor::Stack(ms) => ms.iter().map(|m| m.storage.bytes()).sum(),
            Tensor::Vector(v) => v.len() * 4,
        }
    }
}

// Shape rules. `h` hidden, `l` the layer.
fn always_h(c: &GemmaConfig, _: usize) -> Option<Vec<usize>> {
    Some(vec![c.hidden_size])
}
fn own_kv(c: &GemmaConfig, l: usize) -> bool {
    c.layers[l].kv_source.is_none()
}
fn sandwich_h(c: &GemmaConfig, _: usize) -> Option<Vec<usize>> {
    c.sandwich_norms.then(|| vec![c.hidden_size])
}
fn ple_on(c: &GemmaConfig) -> bool {
    c.per_layer_input_size > 0
}
fn moe_h(c: &GemmaConfig, _: usize) -> Option<Vec<usize>> {
    c.moe.map(|_| vec![c.hidden_size])
}
fn altup_h(c: &GemmaConfig, _: usize) -> Option<Vec<usize>> {
    c.altup.map(|_| vec![c.hidden_size])
}
fn altup_streams(c: &GemmaConfig, _: usize) -> Option<Vec<usize>> {
    c.altup.filter(|a| a.streams > 1).map(|a| vec![a.streams - 1, c.hidden_size, c.hidden_size])
}
fn laurel_on(c: &GemmaConfig) -> bool {
    c.laurel_rank > 0
}

const fn row(
    part: Part,
    hf: &'static str,
    gguf: &'static str,
    scope: Scope,
    form: Form,
    quant: QuantClass,
    shape: fn(&GemmaConfig, usize) -> Option<Vec<usize>>,
) -> TensorSpec {
    TensorSpec { part, hf, gguf, peft: None, scope, form, quant, shape }
}

const fn proj(
    part: Part,
    hf: &'static str,
    gguf: &'static str,
    peft: &'static str,
    role: Proj,
    shape: fn(&GemmaConfig, usize) -> Option<Vec<usize>>,
) -> TensorSpec {
    TensorSpec { part, hf, gguf, peft: Some(peft), scope: Scope::Layer, form: Form::Matrix, quant: QuantClass::Weight(role), shape }
}

use Form::{Matrix as Mat, Norm, Stack, Streams, Vector as Vec1};
use QuantClass::{Float, Vector as VecQ, Weight};
use Scope::{Layer, Model};

/// Every tensor of every Gemma text generation, in GGUF file order.
pub static TENSORS: &[TensorSpec] = &[
    row(Part::Embed, "{p}embed_tokens.weight", "token_embd.weight", Model, Mat, QuantClass::Embedding, |c, _| Some(vec![c.vocab_size, c.hidden_size])),
    // Per layer.
    row(Part::AttnNorm, "{p}layers.{l}.input_layernorm.weight", "blk.{l}.attn_norm.weight", Layer, Norm, VecQ, always_h),
    // Gemma 1 names its pre-FFN norm `post_attention_layernorm` (see `Naming::name`).
    row(Part::FfnNorm, "{p}layers.{l}.pre_feedforward_layernorm.weight", "blk.{l}.ffn_norm.weight", Layer, Norm, VecQ, always_h),
    row(Part::PostAttnNorm, "{p}layers.{l}.post_attention_layernorm.weight", "blk.{l}.post_attention_norm.weight", Layer, Norm, VecQ, sandwich_h),
    row(Part::PostFfnNorm, "{p}layers.{l}.post_feedforward_layernorm.weight", "blk.{l}.post_ffw_norm.weight", Layer, Norm, VecQ, sandwich_h),
    row(Part::QNorm, "{p}layers.{l}.self_attn.q_norm.weight", "blk.{l}.attn_q_norm.weight", Layer, Norm, VecQ, |c, l| c.qk_norm.then(|| vec![c.layers[l].head_dim])),
    // KV-sharing layers (Gemma 3n/4) compute no keys or values.
    row(Part::KNorm, "{p}layers.{l}.self_attn.k_norm.weight", "blk.{l}.attn_k_norm.weight", Layer, Norm, VecQ, |c, l| {
        (c.qk_norm && own_kv(c, l)).then(|| vec![c.layers[l].head_dim])
    }),
    proj(Part::Q, "{p}layers.{l}.self_attn.q_proj.weight", "blk.{l}.attn_q.weight", "q_proj", Proj::Q, |c, l| Some(vec![c.layer_q_dim(l), c.hidden_size])),
    proj(Part::K, "{p}layers.{l}.self_attn.k_proj.weight", "blk.{l}.attn_k.weight", "k_proj", Proj::K, |c, l| {
        own_kv(c, l).then(|| vec![c.layer_kv_dim(l), c.hidden_size])
    }),
    // `attention_k_eq_v` layers (Gemma 4) use the keys as values.
    proj(Part::V, "{p}layers.{l}.self_attn.v_proj.weight", "blk.{l}.attn_v.weight", "v_proj", Proj::V, |c, l| {
        (own_kv(c, l) && !c.layers[l].k_eq_v).then(|| vec![c.layer_kv_dim(l), c.hidden_size])
    }),
    proj(Part::O, "{p}layers.{l}.self_attn.o_proj.weight", "blk.{l}.attn_output.weight", "o_proj", Proj::O, |c, l| Some(vec![c.hidden_size, c.layer_q_dim(l)])),
    proj(Part::Gate, "{p}layers.{l}.mlp.gate_proj.weight", "blk.{l}.ffn_gate.weight", "gate_proj", Proj::Gate, |c, l| {
        Some(vec![c.layers[l].intermediate_size, c.hidden_size])
    }),
    proj(Part::Up, "{p}layers.{l}.mlp.up_proj.weight", "blk.{l}.ffn_up.weight", "up_proj", Proj::Up, |c, l| Some(vec![c.layers[l].intermediate_size, c.hidden_size])),
    proj(Part::Down, "{p}layers.{l}.mlp.down_proj.weight", "blk.{l}.ffn_down.weight", "down_proj", Proj::Down, |c, l| {
        Some(vec![c.hidden_size, c.layers[l].intermediate_size])
    }),
    // Gemma 3n AltUp (llama.cpp's gemma3n names).
    row(Part::AltUpCorrectScale, "{p}layers.{l}.altup.correct_output_scale", "blk.{l}.altup_correct_scale.weight", Layer, Vec1, VecQ, altup_h),
    row(Part::AltUpCorrectionCoefs, "{p}layers.{l}.altup.correction_coefs.weight", "blk.{l}.altup_correct_coef.weight", Layer, Vec1, Float, |c, _| {
        c.altup.map(|a| vec![a.streams, a.streams])
    }),
    row(Part::AltUpPredictionCoefs, "{p}layers.{l}.altup.prediction_coefs.weight", "blk.{l}.altup_predict_coef.weight", Layer, Vec1, Float, |c, _| {
        c.altup.map(|a| vec![a.streams * a.streams, a.streams])
    }),
    row(Part::AltUpRouter, "{p}layers.{l}.altup.modality_router.weight", "blk.{l}.altup_router.weight", Layer, Mat, Float, |c, _| {
        c.altup.map(|a| vec![a.streams, c.hidden_size])
    }),
    row(Part::AltUpRouterNorm, "{p}layers.{l}.altup.router_norm.weight", "blk.{l}.altup_router_norm.weight", Layer, Norm, VecQ, altup_h),
    // Gemma 3n LAuReL.
    row(Part::LaurelLeft, "{p}layers.{l}.laurel.linear_left.weight", "blk.{l}.laurel_l.weight", Layer, Mat, Weight(Proj::Up), |c, _| {
        laurel_on(c).then(|| vec![c.laurel_rank, c.hidden_size])
    }),
    row(Part::LaurelRight, "{p}layers.{l}.laurel.linear_right.weight", "blk.{l}.laurel_r.weight", Layer, Mat, Weight(Proj::Up), |c, _| {
        laurel_on(c).then(|| vec![c.hidden_size, c.laurel_rank])
    }),
    row(Part::LaurelNorm, "{p}layers.{l}.laurel.post_laurel_norm.weight", "blk.{l}.laurel_post_norm.weight", Layer, Norm, VecQ, |c, _| {
        laurel_on(c).then(|| vec![c.hidden_size])
    }),
    // Gemma 4 (llama.cpp's gemma4 names).
    row(Part::LayerScalar, "{p}layers.{l}.layer_scalar", "blk.{l}.layer_output_scale.weight", Layer, Vec1, VecQ, |c, _| c.layer_scalar.then(|| vec![1])),
    row(Part::PleGate, "{p}layers.{l}.per_layer_input_gate.weight", "blk.{l}.inp_gate.weight", Layer, Mat, Weight(Proj::Up), |c, _| {
        ple_on(c).then(|| vec![c.per_layer_input_size, c.hidden_size])
    }),
    row(Part::PleProj, "{p}layers.{l}.per_layer_projection.weight", "blk.{l}.proj.weight", Layer, Mat, Weight(Proj::Up), |c, _| {
        ple_on(c).then(|| vec![c.hidden_size, c.per_layer_input_size])
    }),
    row(Part::PleNorm, "{p}layers.{l}.post_per_layer_input_norm.weight", "blk.{l}.post_norm.weight", Layer, Norm, VecQ, |c, _| {
        ple_on(c).then(|| vec![c.hidden_size])
    }),
    row(Part::RouterProj, "{p}layers.{l}.router.proj.weight", "blk.{l}.ffn_gate_inp.weight", Layer, Mat, Float, |c, _| {
        c.moe.map(|m| vec![m.experts, c.hidden_size])
    }),
    row(Part::RouterScale, "{p}layers.{l}.router.scale", "blk.{l}.ffn_gate_inp.scale", Layer, Vec1, VecQ, moe_h),
    row(Part::ExpertScale, "{p}layers.{l}.router.per_expert_scale", "blk.{l}.ffn_down_exps.scale", Layer, Vec1, VecQ, |c, _| c.moe.map(|m| vec![m.experts])),
    row(Part::ExpertsGateUp, "{p}layers.{l}.experts.gate_up_proj", "blk.{l}.ffn_gate_up_exps.weight", Layer, Stack, Weight(Proj::Up), |c, _| {
        c.moe.map(|m| vec![m.experts, 2 * m.intermediate_size, c.hidden_size])
    }),
    row(Part::ExpertsDown, "{p}layers.{l}.experts.down_proj", "blk.{l}.ffn_down_exps.weight", Layer, Stack, Weight(Proj::Down), |c, _| {
        c.moe.map(|m| vec![m.experts, c.hidden_size, m.intermediate_size])
    }),
    row(Part::MoePreNorm, "{p}layers.{l}.pre_feedforward_layernorm_2.weight", "blk.{l}.pre_ffw_norm_2.weight", Layer, Norm, VecQ, moe_h),
    row(Part::MoePostNormDense, "{p}layers.{l}.post_feedforward_layernorm_1.weight", "blk.{l}.post_ffw_norm_1.weight", Layer, Norm, VecQ, moe_h),
    row(Part::MoePostNormExperts, "{p}layers.{l}.post_feedforward_layernorm_2.weight", "blk.{l}.post_ffw_norm_2.weight", Layer, Norm, VecQ, moe_h),
    // Model-wide, after the layers.
    row(Part::AltUpProj, "{p}altup_projections.{l}.weight", "altup_proj.weight", Model, Streams, Weight(Proj::Up), altup_streams),
    row(Part::AltUpUnembed, "{p}altup_unembed_projections.{l}.weight", "altup_unembd_proj.weight", Model, Streams, Weight(Proj::Up), altup_streams),
    row(Part::PleEmbed, "{p}embed_tokens_per_layer.weight", "per_layer_token_embd.weight", Model, Mat, QuantClass::Embedding, |c, _| {
        ple_on(c).then(|| vec![c.per_layer_vocab_size, c.num_layers() * c.per_layer_input_size])
    }),
    row(Part::PleModelProj, "{p}per_layer_model_projection.weight", "per_layer_model_proj.weight", Model, Mat, Weight(Proj::Up), |c, _| {
        ple_on(c).then(|| vec![c.num_layers() * c.per_layer_input_size, c.hidden_size])
    }),
    row(Part::PleModelNorm, "{p}per_layer_projection_norm.weight", "per_layer_proj_norm.weight", Model, Norm, VecQ, |c, _| {
        ple_on(c).then(|| vec![c.per_layer_input_size])
    }),
    row(Part::FinalNorm, "{p}norm.weight", "output_norm.weight", Model, Norm, VecQ, always_h),
    row(Part::LmHead, "lm_head.weight", "output.weight", Model, Mat, QuantClass::Head, |c, _| {
        (!c.tie_word_embeddings).then(|| vec![c.vocab_size, c.hidden_size])
    }),
];

/// llama.cpp's per-layer RoPE frequency factors (Gemma 4's partial RoPE): a
/// GGUF-only tensor, written from the config, not held in `Weights`.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// The table's row for `part`.
pub fn spec(part: Part) -> &'static TensorSpec {
    // Every `Part` has a row (checked by a test); the table is small.
    TENSORS.iter().find(|s| s.part == part).unwrap_or(&TENSORS[0])
}

/// Rows in visiting order: the model-wide rows before the first per-layer
/// row, then each layer's rows, then the remaining model-wide rows; calls
/// `f(spec, l)` for every `(row, index)` pair of `cfg` whose shape rule
/// gives a shape (one call per model-wide row, with `l = 0`).
pub fn walk(cfg: &GemmaConfig, f: &mut dyn FnMut(&'static TensorSpec, usize)) {
    let first_layer = TENSORS.iter().position(|s| s.scope == Scope::Layer).unwrap_or(TENSORS.len());
    let present = |s: &TensorSpec, l: usize| (s.shape)(cfg, l).is_some();
    for s in &TENSORS[..first_layer] {
        if present(s, 0) {
            f(s, 0);
        }
    }
    for l in 0..cfg.num_layers() {
        for s in TENSORS.iter().filter(|s| s.scope == Scope::Layer) {
            if present(s, l) {
                f(s, l);
            }
        }
    }
    for s in TENSORS[first_layer..].iter().filter(|s| s.scope == Scope::Model) {
        if present(s, 0) {
            f(s, 0);
        }
    }
}

impl GemmaConfig {
    /// Parameters the checkpoint holds (tied head counted once), from the
    /// table's shape rules alone: what `Weights::parameter_count` counts
    /// once loaded (`gemma inspect --variants` shows it per published size).
    pub fn parameter_count(&self) -> usize {
        let mut n = 0;
        walk(self, &mut |s, l| n += s.numel(self, l));
        n
    }

    /// Approximate bytes of the weights with every parameter stored as
    /// `dtype` (norms are really f32: a rounding error at these sizes).
    pub fn weight_bytes(&self, dtype: gemma_core::DType) -> u64 {
        dtype.bytes_for(self.parameter_count()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part has exactly one row, and its names are unique.
    #[test]
    fn one_row_per_part() {
        let mut seen = std::collections::HashSet::new();
        for s in TENSORS {
            assert!(seen.insert(s.part), "{:?} twice", s.part);
            assert_eq!(spec(s.part).part, s.part);
        }
        assert_eq!(seen.len(), 41, "a Part without a row");
        let hf: std::collections::HashSet<_> = TENSORS.iter().map(|s| s.hf).collect();
        let gguf: std::collections::HashSet<_> = TENSORS.iter().map(|s| s.gguf).collect();
        assert_eq!((hf.len(), gguf.len()), (TENSORS.len(), TENSORS.len()));
        for p in Proj::ALL {
            assert_eq!(Proj::from_peft(p.peft_name()), Some(p));
            assert_eq!(p.index(), Proj::ALL.iter().position(|&x| x == p).unwrap());
        }
    }
}
