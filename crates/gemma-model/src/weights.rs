//! Model weights and their loading from Hugging Face safetensors. Naming and
//! storage quirks (name prefixes, `1 + w` norms) are resolved here only.

use crate::config::GemmaConfig;
pub use crate::tensors::Part;
use crate::tensors::{spec, walk, Form, Tensor};
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
        let mut n = 0;
        self.visit(&mut |_, _, t| n += t.numel());
        n
    }

    /// Bytes held by the weights in memory.
    pub fn bytes(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |_, _, t| n += t.bytes());
        n
    }

    /// Bytes read from memory per decoded token: every tensor but the token
    /// tables (one row each, ignored; the tied embedding is read whole as
    /// the output head), and of the experts only the routed ones.
    pub fn bytes_per_token(&self) -> usize {
        let tied = self.lm_head.is_none();
        let mut n = 0;
        self.visit(&mut |s, l, t| {
            n += match s.part {
                Part::Embed if tied => t.bytes(),
                Part::Embed | Part::PleEmbed => 0,
                Part::ExpertsGateUp | Part::ExpertsDown => {
                    let e = self.layers[l].moe.as_ref().map_or((1, 1), |e| (e.top_k, e.gate_up.len().max(1)));
                    t.bytes() * e.0 / e.1
                }
                _ => t.bytes(),
            }
        });
        n
    }

    /// The dtype of the token embedding (see [`Weights::dtype_mix`] for all matrices).
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Every weight matrix, once (each expert of a stack on its own).
    pub fn for_each_matrix(&self, f: &mut dyn FnMut(&Matrix)) {
        self.visit(&mut |_, _, t| match t {
            Tensor::Matrix(m) => f(m),
            Tensor::Stack(ms) => ms.iter().for_each(&mut *f),
            _ => {}
        });
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
    /// The file's name for a logical weight (of layer `l` for block parts,
    /// of stream `l` for Hugging Face's per-stream AltUp projections).
    pub fn name(self, part: Part, l: usize, sandwich: bool) -> String {
        match self {
            // Gemma 1 calls its pre-FFN norm `post_attention_layernorm`.
            Naming::HuggingFace { prefix } if part == Part::FfnNorm && !sandwich => spec(Part::PostAttnNorm).hf_name(prefix, l),
            Naming::HuggingFace { prefix } => spec(part).hf_name(prefix, l),
            Naming::Gguf => spec(part).gguf_name(l),
        }
    }

    /// True when stored norm weights already include the `+1`.
    fn norms_hold_one_plus_w(self) -> bool {
        matches!(self, Naming::Gguf)
    }
}

/// A source of named tensors: returns `(shape outermost-first, storage)`.
pub type TensorSource<'a> = dyn Fn(&str) -> Result<(Vec<usize>, Storage)> + 'a;

/// Loads logical weights with shape checks and progress reporting; every
/// shape and presence comes from the tensor table.
struct Loader<'a> {
    /// None: every tensor is a zero placeholder of the expected shape.
    source: Option<&'a TensorSource<'a>>,
    naming: Naming,
    cfg: &'a GemmaConfig,
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

    /// The file's name and the table's shape of `part` in layer `l` (None: absent).
    fn find(&self, part: Part, l: usize) -> Option<(String, Vec<usize>)> {
        let shape = (spec(part).shape)(self.cfg, l)?;
        Some((self.naming.name(part, l, self.cfg.sandwich_norms), shape))
    }

    /// A matrix `[rows, cols]`, converted to the load dtype when one is asked.
    fn matrix(&mut self, part: Part, l: usize) -> Result<Option<Matrix>> {
        let Some((name, shape)) = self.find(part, l) else { return Ok(None) };
        self.matrix_named(&name, shape[0], shape[1]).map(Some)
    }

    fn matrix_named(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let mut s = self.raw(name, &[rows, cols])?;
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

    /// A norm, returned as its gain in f32 (`1 + w` for Gemma 1–3 files that store `w`).
    fn norm(&mut self, part: Part, l: usize) -> Result<Option<Vec<f32>>> {
        debug_assert_eq!(spec(part).form, Form::Norm);
        let off = self.norm_offset;
        Ok(self.vector(part, l)?.map(|v| v.into_iter().map(|x| off + x).collect()))
    }

    /// A vector (or small row-major matrix), as stored, in f32.
    fn vector(&mut self, part: Part, l: usize) -> Result<Option<Vec<f32>>> {
        let Some((name, shape)) = self.find(part, l) else { return Ok(None) };
        Ok(Some(gemma_quant::to_f32_vec(&self.raw(&name, &shape)?)))
    }

    /// A stack of `n` matrices `[n, rows, cols]` (packed experts; AltUp's
    /// stream projections, one tensor per stream in Hugging Face files),
    /// split: views of the memory map when they keep their stored type (no
    /// copy: the 26B-A4B's experts are 90% of its bytes), else converted.
    fn stack(&mut self, part: Part, l: usize) -> Result<Option<Vec<Matrix>>> {
        let Some((name, shape)) = self.find(part, l) else { return Ok(None) };
        let [n, rows, cols] = shape[..] else { return Err(GemmaError::Unsupported(format!("`{name}`: the tensor table gives no [n, rows, cols] shape"))) };
        if spec(part).form == Form::Streams && self.naming != Naming::Gguf {
            return (0..n).map(|i| self.matrix_named(&self.naming.name(part, i, false), rows, cols)).collect::<Result<Vec<_>>>().map(Some);
        }
        let s = self.raw(&name, &shape)?;
        let stored = s.dtype();
        let keep = self.dtype.is_none_or(|d| gemma_quant::fallback(d, cols) == stored);
        if let Storage::Raw { bytes: Bytes::Mapped { map, start, .. }, .. } = &s {
            if keep && rows * cols % stored.block_size() == 0 {
                let each = stored.bytes_for(rows * cols);
                return Ok(Some(
                    (0..n)
                        .map(|e| {
                            let bytes = Bytes::Mapped { map: map.clone(), start: start + e * each, len: each };
                            Matrix::new(rows, cols, Storage::Raw { dtype: stored, len: rows * cols, bytes })
                        })
                        .collect(),
                ));
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
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Tensors this load reads (for progress): the table's, with Hugging
    /// Face's per-stream AltUp tensors counted one each.
    fn count(&self, untied: bool) -> usize {
        let mut n = usize::from(untied && self.cfg.tie_word_embeddings);
        walk(self.cfg, &mut |s, l| {
            n += match (s.form, self.naming) {
                (Form::Streams, Naming::HuggingFace { .. }) => (s.shape)(self.cfg, l).map_or(0, |v| v[0]),
                _ => 1,
            }
        });
        n
    }
}

/// A required tensor the table always gives a shape: absent only through a bug in its shape rule.
fn need<T>(part: Part, x: Option<T>) -> Result<T> {
    x.ok_or_else(|| GemmaError::Unsupported(format!("the tensor table gives {part:?} no shape for this config")))
}

/// An empty `[0, cols]` matrix (a projection the layer does not have).
fn no_matrix(cols: usize) -> Matrix {
    Matrix::new(0, cols, Storage::F32(Vec::new()))
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
        let untied = !cfg.tie_word_embeddings || has_lm_head;
        let norm_offset = if naming.norms_hold_one_plus_w() { 0.0 } else { cfg.norm_offset };
        let mut ld = Loader { source, naming, cfg, norm_offset, dtype, progress, done: 0, total: 0 };
        ld.total = ld.count(untied);
        let h = cfg.hidden_size;
        let embed = need(Part::Embed, ld.matrix(Part::Embed, 0)?)?;
        let mut layers = Vec::with_capacity(cfg.num_layers());
        for l in 0..cfg.num_layers() {
            let post_attn_norm = ld.norm(Part::PostAttnNorm, l)?;
            let post_ffn_norm = ld.norm(Part::PostFfnNorm, l)?;
            let q_norm = ld.norm(Part::QNorm, l)?;
            let k_norm = ld.norm(Part::KNorm, l)?;
            let ple = match (ld.matrix(Part::PleGate, l)?, ld.matrix(Part::PleProj, l)?, ld.norm(Part::PleNorm, l)?) {
                (Some(gate), Some(proj), Some(norm)) => Some(PleLayerWeights { gate, proj, norm }),
                _ => None,
            };
            let moe = match cfg.moe {
                Some(m) => Some(MoeWeights {
                    top_k: m.top_k,
                    router: need(Part::RouterProj, ld.matrix(Part::RouterProj, l)?)?,
                    router_scale: need(Part::RouterScale, ld.vector(Part::RouterScale, l)?)?,
                    expert_scale: need(Part::ExpertScale, ld.vector(Part::ExpertScale, l)?)?,
                    gate_up: need(Part::ExpertsGateUp, ld.stack(Part::ExpertsGateUp, l)?)?,
                    down: need(Part::ExpertsDown, ld.stack(Part::ExpertsDown, l)?)?,
                    pre_norm: need(Part::MoePreNorm, ld.norm(Part::MoePreNorm, l)?)?,
                    post_norm_dense: need(Part::MoePostNormDense, ld.norm(Part::MoePostNormDense, l)?)?,
                    post_norm_experts: need(Part::MoePostNormExperts, ld.norm(Part::MoePostNormExperts, l)?)?,
                }),
                None => None,
            };
            let altup = match cfg.altup {
                Some(_) => Some(AltUpLayerWeights {
                    correct_output_scale: need(Part::AltUpCorrectScale, ld.vector(Part::AltUpCorrectScale, l)?)?,
                    correction_coefs: need(Part::AltUpCorrectionCoefs, ld.vector(Part::AltUpCorrectionCoefs, l)?)?,
                    prediction_coefs: need(Part::AltUpPredictionCoefs, ld.vector(Part::AltUpPredictionCoefs, l)?)?,
                    router: need(Part::AltUpRouter, ld.matrix(Part::AltUpRouter, l)?)?,
                    router_norm: need(Part::AltUpRouterNorm, ld.norm(Part::AltUpRouterNorm, l)?)?,
                }),
                None => None,
            };
            let laurel = match (ld.matrix(Part::LaurelLeft, l)?, ld.matrix(Part::LaurelRight, l)?, ld.norm(Part::LaurelNorm, l)?) {
                (Some(left), Some(right), Some(norm)) => Some(LaurelWeights { left, right, norm }),
                _ => None,
            };
            layers.push(LayerWeights {
                attn_norm: need(Part::AttnNorm, ld.norm(Part::AttnNorm, l)?)?,
                q: need(Part::Q, ld.matrix(Part::Q, l)?)?,
                k: ld.matrix(Part::K, l)?.unwrap_or_else(|| no_matrix(h)),
                v: ld.matrix(Part::V, l)?.unwrap_or_else(|| no_matrix(h)),
                o: need(Part::O, ld.matrix(Part::O, l)?)?,
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm: need(Part::FfnNorm, ld.norm(Part::FfnNorm, l)?)?,
                gate: need(Part::Gate, ld.matrix(Part::Gate, l)?)?,
                up: need(Part::Up, ld.matrix(Part::Up, l)?)?,
                down: need(Part::Down, ld.matrix(Part::Down, l)?)?,
                post_ffn_norm,
                layer_scalar: ld.vector(Part::LayerScalar, l)?.map(|v| v[0]),
                ple,
                moe,
                altup,
                laurel,
            });
        }
        let ple = match (ld.matrix(Part::PleEmbed, 0)?, ld.matrix(Part::PleModelProj, 0)?, ld.norm(Part::PleModelNorm, 0)?) {
            (Some(embed), Some(proj), Some(norm)) => Some(PleWeights { embed, proj, norm }),
            _ => None,
        };
        let altup = match cfg.altup {
            Some(_) => Some(AltUpWeights {
                proj: ld.stack(Part::AltUpProj, 0)?.unwrap_or_default(),
                unembed: ld.stack(Part::AltUpUnembed, 0)?.unwrap_or_default(),
            }),
            None => None,
        };
        let final_norm = need(Part::FinalNorm, ld.norm(Part::FinalNorm, 0)?)?;
        // A GGUF with a tied config may still ship its own head.
        let lm_head = if untied { Some(ld.matrix_named(&naming.name(Part::LmHead, 0, false), cfg.vocab_size, h)?) } else { None };
        Ok(Self { embed, layers, final_norm, lm_head, ple, altup })
    }

    /// Load from a Hugging Face safetensors checkpoint.
    pub fn from_safetensors(set: &SafetensorsSet, cfg: &GemmaConfig, dtype: Option<DType>, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let embed = spec(Part::Embed);
        let prefix = HF_PREFIXES
            .iter()
            .copied()
            .find(|p| set.info(&embed.hf_name(p, 0)).is_some())
            .ok_or_else(|| GemmaError::MissingTensor { name: embed.hf_name("model.", 0) })?;
        // Multimodal checkpoints keep the head under language_model.
        let lm_head = spec(Part::LmHead).hf;
        let multimodal_head = format!("language_model.{lm_head}");
        let head = [lm_head, &multimodal_head].into_iter().find(|n| set.info(n).is_some());
        if !cfg.tie_word_embeddings && head.is_none() {
            return Err(GemmaError::MissingTensor { name: format!("{lm_head} (tie_word_embeddings is false)") });
        }
        let source = |name: &str| {
            let name = if name == lm_head { head.unwrap_or(name) } else { name };
            set.load(name)
        };
        // A tied checkpoint that still ships lm_head: the embedding is the head.
        Self::load(&source, Naming::HuggingFace { prefix }, cfg, !cfg.tie_word_embeddings, dtype, progress)
    }
}
