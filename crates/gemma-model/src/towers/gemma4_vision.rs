//! Gemma 4's vision tower: a linear patch embedding with factorized 2-D
//! positions (an x table plus a y table), encoder blocks of Gemma 4 shape
//! (scale-free RMSNorms `x̂·w` around attention and MLP, qk-norm, a value
//! norm without gain, axial 2-D RoPE, attention scale 1, gated tanh-GELU
//! MLP, optionally clipped linears), a k×k average pool by patch position
//! scaled by `√hidden`, optional standardization, then the multimodal
//! embedder (a gain-free RMSNorm and one projection to the text width) —
//! an image's real patches in, its soft tokens out, as transformers'
//! `Gemma4Model.get_image_features` computes them (padding patches are
//! masked out of attention and pooled to nothing there, so they are never
//! made here).

use super::siglip::Source;
use gemma_core::{GemmaError, Matrix, Result, Storage};
use gemma_kernels::matmul;
use serde::Deserialize;

/// Gemma 4's `vision_config` (transformers' defaults where a field is absent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Gemma4VisionConfig {
    /// Width of the encoder.
    pub hidden_size: usize,
    /// Width of its MLP.
    pub intermediate_size: usize,
    /// Encoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// MLP activation (only `gelu_pytorch_tanh` is supported).
    pub hidden_activation: String,
    /// RMSNorm epsilon (also the embedder's).
    pub rms_norm_eps: f64,
    /// Side of the pooling window in patches (soft tokens = patches / k²).
    pub pooling_kernel_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// Rows of each position table (the largest patch coordinate + 1).
    pub position_embedding_size: usize,
    /// RoPE: `rope_type` (only `axial`) and `rope_theta`.
    pub rope_parameters: VisionRope,
    /// Linears clamp their input and output to stored bounds.
    pub use_clipped_linears: bool,
    /// The pooled features are standardized (`(x − std_bias) · std_scale`).
    pub standardize: bool,
}

/// The tower's RoPE parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionRope {
    /// Only `axial` (x on the first half of a head, y on the second).
    pub rope_type: String,
    /// Base of the frequencies.
    pub rope_theta: f64,
}

impl Default for VisionRope {
    fn default() -> Self {
        Self { rope_type: "axial".into(), rope_theta: 100.0 }
    }
}

impl Default for Gemma4VisionConfig {
    fn default() -> Self {
        // transformers' Gemma4VisionConfig defaults.
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 16,
            num_attention_heads: 12,
            num_key_value_heads: 12,
            head_dim: 64,
            hidden_activation: "gelu_pytorch_tanh".into(),
            rms_norm_eps: 1e-6,
            pooling_kernel_size: 3,
            patch_size: 16,
            position_embedding_size: 10 * 1024,
            rope_parameters: VisionRope::default(),
            use_clipped_linears: false,
            standardize: false,
        }
    }
}

impl Gemma4VisionConfig {
    /// Checks the shape rules the forward relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: String| Err(GemmaError::config(format!("vision_config.{f}"), m));
        if self.hidden_size == 0 || self.patch_size == 0 || self.pooling_kernel_size == 0 || self.position_embedding_size == 0 {
            return bad("hidden_size", "hidden_size, patch_size, pooling_kernel_size and position_embedding_size must be positive".into());
        }
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad("num_key_value_heads", format!("{} does not divide num_attention_heads {}", self.num_key_value_heads, self.num_attention_heads));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(4) {
            return bad("head_dim", format!("{} is not a positive multiple of 4 (axial RoPE splits a head in four)", self.head_dim));
        }
        if self.hidden_activation != "gelu_pytorch_tanh" && self.hidden_activation != "gelu_new" {
            return bad("hidden_activation", format!("`{}` is not supported (gelu_pytorch_tanh is)", self.hidden_activation));
        }
        if self.rope_parameters.rope_type != "axial" {
            return bad("rope_parameters.rope_type", format!("`{}` is not supported (axial is)", self.rope_parameters.rope_type));
        }
        Ok(())
    }

    /// Values in one patch row (`patch_size² × 3`).
    pub fn patch_values(&self) -> usize {
        3 * self.patch_size * self.patch_size
    }
}

/// An image as the tower takes it: its real patches in row-major patch
/// order and each patch's `(x, y)` in the patch grid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchInput {
    /// `[patches, p·p·3]`, each row in (y, x, channel) order, values in `[0, 1]`.
    pub patches: Vec<f32>,
    /// `(x, y)` of each patch.
    pub positions: Vec<[usize; 2]>,
}

/// A linear without bias whose input and output may be clamped.
#[derive(Debug)]
pub(super) struct Linear {
    /// `[out, in]`.
    pub(super) w: Matrix,
    /// `(input min, input max, output min, output max)`.
    pub(super) clip: Option<[f32; 4]>,
}

impl Linear {
    /// `clamp(clamp(x)·Wᵀ)` for `x: [n, in]`.
    fn apply(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * self.w.rows];
        match self.clip {
            Some([lo, hi, olo, ohi]) => {
                let xc: Vec<f32> = x.iter().map(|v| v.max(lo).min(hi)).collect();
                matmul(&xc, n, &self.w, &mut y);
                y.iter_mut().for_each(|v| *v = v.max(olo).min(ohi));
            }
            None => matmul(x, n, &self.w, &mut y),
        }
        y
    }
}

/// Weights of one encoder block.
#[derive(Debug)]
pub(super) struct Block {
    pub(super) input_norm: Vec<f32>,
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    pub(super) q_norm: Vec<f32>,
    pub(super) k_norm: Vec<f32>,
    pub(super) post_attention_norm: Vec<f32>,
    pub(super) pre_ffn_norm: Vec<f32>,
    pub(super) gate: Linear,
    pub(super) up: Linear,
    pub(super) down: Linear,
    pub(super) post_ffn_norm: Vec<f32>,
}

/// An image part-way through the encoder.
#[derive(Debug, Clone, Default)]
pub struct Gemma4Encoding {
    /// The residual stream `[patches, hidden]`.
    x: Vec<f32>,
    /// `(x, y)` of each patch.
    positions: Vec<[usize; 2]>,
    /// The next block to run.
    next: usize,
}

/// The loaded tower and embedder.
#[derive(Debug)]
pub struct Gemma4VisionTower {
    /// Its config.
    pub config: Gemma4VisionConfig,
    /// Width of the text model the tokens feed.
    pub text_hidden: usize,
    /// `[hidden, p·p·3]`.
    pub(super) patch: Matrix,
    /// `[2, position_embedding_size, hidden]`: the x table, then the y table.
    pub(super) positions: Vec<f32>,
    pub(super) blocks: Vec<Block>,
    /// `(std_bias, std_scale)` when the config standardizes.
    pub(super) standardize: Option<(Vec<f32>, Vec<f32>)>,
    /// The embedder's projection `[text_hidden, hidden]`.
    pub(super) projection: Matrix,
    /// `1 / θ^(2i / (hd/2))` for `i < hd/4` (the frequencies of each axis).
    pub(super) inv_freq: Vec<f32>,
}

/// Where the tower's tensors live: transformers 5 saves `model.vision_tower.*`.
pub const TOWER_PREFIXES: [&str; 2] = ["model.vision_tower.", "vision_tower."];
/// Where the embedder's tensors live.
pub const EMBEDDER_PREFIXES: [&str; 2] = ["model.embed_vision.", "embed_vision."];
/// The tensor that tells a checkpoint holds this tower.
pub const PROBE: &str = "patch_embedder.input_proj.weight";

impl Gemma4VisionTower {
    /// Load the tower under `prefix` (one of [`TOWER_PREFIXES`]) and the
    /// embedder under `embedder` (one of [`EMBEDDER_PREFIXES`]).
    pub fn load(config: Gemma4VisionConfig, text_hidden: usize, prefix: &str, embedder: &str, source: Source) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let (h, ff, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let tensor = |name: &str, shape: &[usize]| -> Result<Storage> {
            let (found, s) = source(name)?;
            if found != shape {
                return Err(GemmaError::ShapeMismatch { name: name.into(), expected: shape.to_vec(), found });
            }
            Ok(s)
        };
        let vector = |name: &str, len: usize| tensor(name, &[len]).map(|s| gemma_quant::to_f32_vec(&s));
        let scalar = |name: &str| tensor(name, &[]).map(|s| gemma_quant::to_f32_vec(&s).first().copied().unwrap_or(0.0));
        let matrix = |name: &str, rows: usize, cols: usize| tensor(name, &[rows, cols]).map(|s| Matrix::new(rows, cols, super::lossless_bf16(s)));
        let linear = |name: &str, rows: usize, cols: usize| -> Result<Linear> {
            let w = matrix(&format!("{prefix}{name}.linear.weight"), rows, cols)?;
            let clip = if c.use_clipped_linears {
                let b = |k: &str| scalar(&format!("{prefix}{name}.{k}"));
                Some([b("input_min")?, b("input_max")?, b("output_min")?, b("output_max")?])
            } else {
                None
            };
            Ok(Linear { w, clip })
        };
        let (qw, kw) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let blocks = (0..c.num_hidden_layers)
            .map(|l| {
                let b = format!("encoder.layers.{l}.");
                let norm = |n: &str, len: usize| vector(&format!("{prefix}{b}{n}.weight"), len);
                Ok(Block {
                    input_norm: norm("input_layernorm", h)?,
                    q: linear(&format!("{b}self_attn.q_proj"), qw, h)?,
                    k: linear(&format!("{b}self_attn.k_proj"), kw, h)?,
                    v: linear(&format!("{b}self_attn.v_proj"), kw, h)?,
                    o: linear(&format!("{b}self_attn.o_proj"), h, qw)?,
                    q_norm: norm("self_attn.q_norm", hd)?,
                    k_norm: norm("self_attn.k_norm", hd)?,
                    post_attention_norm: norm("post_attention_layernorm", h)?,
                    pre_ffn_norm: norm("pre_feedforward_layernorm", h)?,
                    gate: linear(&format!("{b}mlp.gate_proj"), ff, h)?,
                    up: linear(&format!("{b}mlp.up_proj"), ff, h)?,
                    down: linear(&format!("{b}mlp.down_proj"), h, ff)?,
                    post_ffn_norm: norm("post_feedforward_layernorm", h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let standardize = if c.standardize { Some((vector(&format!("{prefix}std_bias"), h)?, vector(&format!("{prefix}std_scale"), h)?)) } else { None };
        // torch: 1 / θ^(arange(0, hd/2, 2) / (hd/2)) in f32.
        let spatial = hd / 2;
        let theta = c.rope_parameters.rope_theta as f32;
        let inv_freq = (0..spatial).step_by(2).map(|i| 1.0 / theta.powf(i as f32 / spatial as f32)).collect();
        Ok(Self {
            patch: matrix(&format!("{prefix}patch_embedder.input_proj.weight"), h, c.patch_values())?,
            positions: gemma_quant::to_f32_vec(&tensor(&format!("{prefix}patch_embedder.position_embedding_table"), &[2, c.position_embedding_size, h])?),
            blocks,
            standardize,
            projection: matrix(&format!("{embedder}embedding_projection.weight"), text_hidden, h)?,
            inv_freq,
            text_hidden,
            config,
        })
    }

    /// Soft tokens `[patches / k², text_hidden]` of one image.
    pub fn encode(&self, input: &PatchInput) -> Result<Vec<f32>> {
        let mut e = self.begin(input)?;
        while !self.advance(&mut e) {}
        Ok(self.finish(e))
    }

    /// Patch embedding and positions of one image: an encode that
    /// [`Gemma4VisionTower::advance`] runs one block at a time.
    pub fn begin(&self, input: &PatchInput) -> Result<Gemma4Encoding> {
        let c = &self.config;
        let (n, pv, h) = (input.positions.len(), c.patch_values(), c.hidden_size);
        if n == 0 || input.patches.len() != n * pv {
            return Err(GemmaError::Unsupported(format!("an image of {} values in {n} patches; the vision tower takes {pv} values a patch", input.patches.len())));
        }
        let k = c.pooling_kernel_size;
        if let Some(&[x, y]) = input.positions.iter().find(|&&[x, y]| x.max(y) >= c.position_embedding_size) {
            return Err(GemmaError::Unsupported(format!("a patch at ({x}, {y}) is past the {} positions of the tower (the image is too large for it)", c.position_embedding_size)));
        }
        let (gw, gh) = grid(&input.positions);
        if !gw.is_multiple_of(k) || !gh.is_multiple_of(k) || gw * gh != n {
            return Err(GemmaError::Unsupported(format!("a {gw}×{gh} patch grid ({n} patches) does not pool by {k}×{k}")));
        }
        // transformers: 2 · (v − 0.5) before the projection.
        let rows: Vec<f32> = input.patches.iter().map(|&v| 2.0 * (v - 0.5)).collect();
        let mut x = vec![0f32; n * h];
        matmul(&rows, n, &self.patch, &mut x);
        let table = c.position_embedding_size * h;
        for (row, &[px, py]) in x.chunks_exact_mut(h).zip(&input.positions) {
            let (ex, ey) = (&self.positions[px * h..(px + 1) * h], &self.positions[table + py * h..table + (py + 1) * h]);
            row.iter_mut().zip(ex.iter().zip(ey)).for_each(|(v, (a, b))| *v += a + b);
        }
        Ok(Gemma4Encoding { x, positions: input.positions.clone(), next: 0 })
    }

    /// Run the next encoder block of `e`; true once every block has run.
    pub fn advance(&self, e: &mut Gemma4Encoding) -> bool {
        let Some(b) = self.blocks.get(e.next) else { return true };
        let c = &self.config;
        let (eps, hd, h, n) = (c.rms_norm_eps as f32, c.head_dim, c.hidden_size, e.positions.len());
        let x = &mut e.x;
        let hn = rms_norm(x, Some(&b.input_norm), h, eps);
        let mut q = b.q.apply(&hn, n);
        let mut k = b.k.apply(&hn, n);
        let mut v = b.v.apply(&hn, n);
        q = rms_norm(&q, Some(&b.q_norm), hd, eps);
        k = rms_norm(&k, Some(&b.k_norm), hd, eps);
        v = rms_norm(&v, None, hd, eps);
        self.rope(&mut q, &e.positions);
        self.rope(&mut k, &e.positions);
        let att = super::attention::full_attention(&q, &k, &v, (c.num_attention_heads, c.num_key_value_heads, hd), 1.0, b.q.w.dtype() == gemma_core::DType::BF16);
        add(x, &rms_norm(&b.o.apply(&att, n), Some(&b.post_attention_norm), h, eps));
        let hn = rms_norm(x, Some(&b.pre_ffn_norm), h, eps);
        let mut gate = b.gate.apply(&hn, n);
        gemma_kernels::geglu::gelu(&mut gate);
        gate.iter_mut().zip(b.up.apply(&hn, n)).for_each(|(g, u)| *g *= u);
        add(x, &rms_norm(&b.down.apply(&gate, n), Some(&b.post_ffn_norm), h, eps));
        e.next += 1;
        e.next == self.blocks.len()
    }

    /// Pooling, standardization and the embedder of an encode whose blocks
    /// have all run: the soft tokens `[patches / k², text_hidden]`, in
    /// row-major order of the pooled grid.
    pub fn finish(&self, mut e: Gemma4Encoding) -> Vec<f32> {
        while !self.advance(&mut e) {}
        let c = &self.config;
        let (h, k) = (c.hidden_size, c.pooling_kernel_size);
        let (gw, _) = grid(&e.positions);
        let tokens = e.positions.len() / (k * k);
        let mut pooled = vec![0f32; tokens * h];
        for (row, &[px, py]) in e.x.chunks_exact(h).zip(&e.positions) {
            let t = px / k + (gw / k) * (py / k);
            add(&mut pooled[t * h..(t + 1) * h], row);
        }
        // transformers: the one-hot weights are 1/k² (f32), then × √hidden (f32).
        let (inv, root) = (1.0 / (k * k) as f32, (h as f64).sqrt() as f32);
        pooled.iter_mut().for_each(|v| *v = *v * inv * root);
        if let Some((bias, scale)) = &self.standardize {
            for row in pooled.chunks_exact_mut(h) {
                row.iter_mut().zip(bias.iter().zip(scale)).for_each(|(v, (b, s))| *v = (*v - b) * s);
            }
        }
        let normed = rms_norm(&pooled, None, h, c.rms_norm_eps as f32);
        let mut y = vec![0f32; tokens * self.text_hidden];
        matmul(&normed, tokens, &self.projection, &mut y);
        y
    }

    /// Encoder blocks (the steps of an encode).
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Axial RoPE on every head of `m` (`[n, heads·hd]`): the first half of
    /// a head turns with the patch's x, the second with its y, each half
    /// rotated as `rotate_half` does (its two quarters paired).
    fn rope(&self, m: &mut [f32], positions: &[[usize; 2]]) {
        let hd = self.config.head_dim;
        let (half, quarter) = (hd / 2, hd / 4);
        let w = m.len() / positions.len().max(1);
        for (row, pos) in m.chunks_exact_mut(w).zip(positions) {
            for (axis, &p) in pos.iter().enumerate() {
                let (cos, sin): (Vec<f32>, Vec<f32>) = self.inv_freq.iter().map(|&f| p as f32 * f).map(|a| (a.cos(), a.sin())).unzip();
                for head in row.chunks_exact_mut(hd) {
                    let part = &mut head[axis * half..(axis + 1) * half];
                    for i in 0..quarter {
                        let (a, b) = (part[i], part[i + quarter]);
                        part[i] = a * cos[i] - b * sin[i];
                        part[i + quarter] = b * cos[i] + a * sin[i];
                    }
                }
            }
        }
    }
}

/// Width and height of the patch grid `positions` cover.
fn grid(positions: &[[usize; 2]]) -> (usize, usize) {
    positions.iter().fold((0, 0), |(w, h), &[x, y]| (w.max(x + 1), h.max(y + 1)))
}

/// Gemma 4's RMSNorm of each `d`-wide row of `x`: `x · (mean(x²) + eps)^−½`,
/// times `w` when given (a head's qk-norm: `d` the head width).
fn rms_norm(x: &[f32], w: Option<&[f32]>, d: usize, eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps;
        let r = 1.0 / ms.sqrt();
        match w {
            Some(w) => yr.iter_mut().zip(xr.iter().zip(w)).for_each(|(o, (v, g))| *o = v * r * g),
            None => yr.iter_mut().zip(xr).for_each(|(o, v)| *o = v * r),
        }
    }
    y
}

/// `a += b`.
fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}
