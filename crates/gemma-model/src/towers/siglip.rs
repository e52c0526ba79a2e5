//! Gemma 3's vision tower: the SigLIP encoder (patch embedding, learned
//! positions, pre-LayerNorm blocks with biases, tanh-GELU MLP,
//! post-LayerNorm) and the multimodal projector (k×k average pool, `(1 +
//! w)` RMSNorm, one matmul) — one preprocessed image `[3, S, S]` in, its
//! soft tokens `[tokens, text_hidden]` out, as transformers'
//! `Gemma3Model.get_image_features` computes them.

use gemma_core::{GemmaError, Matrix, Result, Storage};
use gemma_kernels::matmul;
use serde::Deserialize;

/// SigLIP's `vision_config` (transformers' defaults where a field is absent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SiglipConfig {
    /// Width of the encoder.
    pub hidden_size: usize,
    /// Width of its MLP.
    pub intermediate_size: usize,
    /// Encoder blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Colour channels.
    pub num_channels: usize,
    /// Side of the (square) input image in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// LayerNorm epsilon (also the projector's RMSNorm's).
    pub layer_norm_eps: f64,
    /// MLP activation (only `gelu_pytorch_tanh` is supported).
    pub hidden_act: String,
}

impl Default for SiglipConfig {
    fn default() -> Self {
        // transformers' SiglipVisionConfig defaults.
        Self { hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, num_channels: 3, image_size: 224, patch_size: 16, layer_norm_eps: 1e-6, hidden_act: "gelu_pytorch_tanh".into() }
    }
}

impl SiglipConfig {
    /// Patches along one side.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Checks the shape rules the forward relies on.
    pub fn validate(&self, tokens_per_image: usize) -> Result<()> {
        let bad = |f: &str, m: String| Err(GemmaError::config(format!("vision_config.{f}"), m));
        if self.patch_size == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad("image_size", format!("{} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad("num_attention_heads", format!("{} does not divide hidden_size {}", self.num_attention_heads, self.hidden_size));
        }
        if self.hidden_act != "gelu_pytorch_tanh" && self.hidden_act != "gelu_new" {
            return bad("hidden_act", format!("`{}` is not supported (gelu_pytorch_tanh is)", self.hidden_act));
        }
        let side = (tokens_per_image as f64).sqrt() as usize;
        let pps = self.patches_per_side();
        if side == 0 || side * side != tokens_per_image || !pps.is_multiple_of(side) {
            return Err(GemmaError::config("mm_tokens_per_image", format!("{tokens_per_image} is not a square whose side divides the {pps} patches per side")));
        }
        Ok(())
    }
}

/// Weights of one encoder block.
#[derive(Debug)]
pub(super) struct Block {
    pub(super) ln1: (Vec<f32>, Vec<f32>),
    pub(super) q: (Matrix, Vec<f32>),
    pub(super) k: (Matrix, Vec<f32>),
    pub(super) v: (Matrix, Vec<f32>),
    pub(super) o: (Matrix, Vec<f32>),
    pub(super) ln2: (Vec<f32>, Vec<f32>),
    pub(super) fc1: (Matrix, Vec<f32>),
    pub(super) fc2: (Matrix, Vec<f32>),
}

/// An image part-way through the encoder.
#[derive(Debug, Clone, Default)]
pub struct SiglipEncoding {
    /// The residual stream `[patches, hidden]`.
    x: Vec<f32>,
    /// The next block to run.
    next: usize,
}

/// The loaded tower and projector.
#[derive(Debug)]
pub struct SiglipTower {
    /// Its config.
    pub config: SiglipConfig,
    /// Soft tokens per image (a square).
    pub tokens_per_image: usize,
    /// Width of the text model the tokens feed.
    pub text_hidden: usize,
    /// `[hidden, channels·p·p]` (the convolution as a matrix) and its bias.
    pub(super) patch: (Matrix, Vec<f32>),
    /// `[patches, hidden]`.
    pub(super) positions: Vec<f32>,
    pub(super) blocks: Vec<Block>,
    pub(super) post: (Vec<f32>, Vec<f32>),
    /// The projector's RMSNorm gain (applied as `1 + w`).
    pub(super) mm_norm: Vec<f32>,
    /// The projection, transposed to `[text_hidden, hidden]`.
    pub(super) mm_proj: Matrix,
}

/// Where the tower's tensors live in a checkpoint: transformers 5 saves
/// `vision_tower.*`, Hub checkpoints `vision_tower.vision_model.*`.
pub const TOWER_PREFIXES: [&str; 2] = ["vision_tower.vision_model.", "vision_tower."];
/// Prefix of the projector's tensors.
pub const PROJECTOR_PREFIX: &str = "multi_modal_projector.";
/// The projector's matrix `[vision_hidden, text_hidden]`.
pub const PROJECTION: &str = "mm_input_projection_weight";
/// The projector's norm.
pub const PROJECTION_NORM: &str = "mm_soft_emb_norm.weight";

/// A tensor source: name → (shape, storage).
pub type Source<'a> = &'a dyn Fn(&str) -> Result<(Vec<usize>, Storage)>;

impl SiglipTower {
    /// Load the tower under `prefix` (one of [`TOWER_PREFIXES`]) and the projector.
    pub fn load(config: SiglipConfig, tokens_per_image: usize, text_hidden: usize, prefix: &str, source: Source) -> Result<Self> {
        config.validate(tokens_per_image)?;
        let (h, ff, c, p) = (config.hidden_size, config.intermediate_size, config.num_channels, config.patch_size);
        let tensor = |name: &str, shape: &[usize]| -> Result<Storage> {
            let (found, s) = source(name)?;
            // A convolution's [out, c, p, p] is the matrix [out, c·p·p].
            if found.iter().product::<usize>() != shape.iter().product::<usize>() || found.first() != shape.first() {
                return Err(GemmaError::ShapeMismatch { name: name.into(), expected: shape.to_vec(), found });
            }
            Ok(s)
        };
        let vector = |name: &str, len: usize| tensor(name, &[len]).map(|s| gemma_quant::to_f32_vec(&s));
        let matrix = |name: &str, rows: usize, cols: usize| tensor(name, &[rows, cols]).map(|s| Matrix::new(rows, cols, super::lossless_bf16(s)));
        let linear = |name: &str, rows: usize, cols: usize| -> Result<(Matrix, Vec<f32>)> {
            Ok((matrix(&format!("{prefix}{name}.weight"), rows, cols)?, vector(&format!("{prefix}{name}.bias"), rows)?))
        };
        let norm = |name: &str| -> Result<(Vec<f32>, Vec<f32>)> { Ok((vector(&format!("{prefix}{name}.weight"), h)?, vector(&format!("{prefix}{name}.bias"), h)?)) };
        let patches = config.patches_per_side().pow(2);
        let blocks = (0..config.num_hidden_layers)
            .map(|l| {
                let b = format!("encoder.layers.{l}.");
                Ok(Block {
                    ln1: norm(&format!("{b}layer_norm1"))?,
                    q: linear(&format!("{b}self_attn.q_proj"), h, h)?,
                    k: linear(&format!("{b}self_attn.k_proj"), h, h)?,
                    v: linear(&format!("{b}self_attn.v_proj"), h, h)?,
                    o: linear(&format!("{b}self_attn.out_proj"), h, h)?,
                    ln2: norm(&format!("{b}layer_norm2"))?,
                    fc1: linear(&format!("{b}mlp.fc1"), ff, h)?,
                    fc2: linear(&format!("{b}mlp.fc2"), h, ff)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // [hidden, text_hidden] in the file; the kernels want [out, in].
        let proj_name = format!("{PROJECTOR_PREFIX}{PROJECTION}");
        let proj = gemma_quant::to_f32_vec(&tensor(&proj_name, &[h, text_hidden])?);
        let mut t = vec![0f32; proj.len()];
        for i in 0..h {
            for j in 0..text_hidden {
                t[j * h + i] = proj[i * text_hidden + j];
            }
        }
        Ok(Self {
            patch: linear("embeddings.patch_embedding", h, c * p * p)?,
            positions: gemma_quant::to_f32_vec(&tensor(&format!("{prefix}embeddings.position_embedding.weight"), &[patches, h])?),
            blocks,
            post: norm("post_layernorm")?,
            mm_norm: vector(&format!("{PROJECTOR_PREFIX}{PROJECTION_NORM}"), h)?,
            mm_proj: Matrix::new(text_hidden, h, Storage::F32(t)),
            config,
            tokens_per_image,
            text_hidden,
        })
    }

    /// Soft tokens `[tokens_per_image, text_hidden]` of one preprocessed
    /// image `pixels` `[channels, image_size, image_size]` (rescaled and
    /// normalized as the processor leaves them).
    pub fn encode(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let mut e = self.begin(pixels)?;
        while !self.advance(&mut e) {}
        Ok(self.finish(e))
    }

    /// Patch embedding and positions of one preprocessed image: an encode
    /// that [`SiglipTower::advance`] runs one block at a time (a server
    /// encodes between decode steps, so an image never stalls other streams
    /// for its whole encode).
    pub fn begin(&self, pixels: &[f32]) -> Result<SiglipEncoding> {
        let cfg = &self.config;
        let (c, p, s) = (cfg.num_channels, cfg.patch_size, cfg.image_size);
        if pixels.len() != c * s * s {
            return Err(GemmaError::Unsupported(format!("an image of {} values; the vision tower takes {c}×{s}×{s}", pixels.len())));
        }
        let side = cfg.patches_per_side();
        let n = side * side;
        // Patches as rows `[n, c·p·p]` in the convolution's (channel, y, x) order.
        let mut rows = vec![0f32; n * c * p * p];
        for (i, row) in rows.chunks_exact_mut(c * p * p).enumerate() {
            let (py, px) = (i / side, i % side);
            for ch in 0..c {
                for ky in 0..p {
                    let src = ch * s * s + (py * p + ky) * s + px * p;
                    row[(ch * p + ky) * p..(ch * p + ky + 1) * p].copy_from_slice(&pixels[src..src + p]);
                }
            }
        }
        let mut x = linear(&rows, n, &self.patch);
        x.iter_mut().zip(&self.positions).for_each(|(a, b)| *a += b);
        Ok(SiglipEncoding { x, next: 0 })
    }

    /// Run the next encoder block of `e`; true once every block has run.
    pub fn advance(&self, e: &mut SiglipEncoding) -> bool {
        let Some(b) = self.blocks.get(e.next) else { return true };
        let eps = self.config.layer_norm_eps as f32;
        let n = self.config.patches_per_side().pow(2);
        let x = &mut e.x;
        let hn = layer_norm(x, &b.ln1, eps);
        let att = self.attention(&linear(&hn, n, &b.q), &linear(&hn, n, &b.k), &linear(&hn, n, &b.v));
        add(x, &linear(&att, n, &b.o));
        let hn = layer_norm(x, &b.ln2, eps);
        let mut mid = linear(&hn, n, &b.fc1);
        gemma_kernels::geglu::gelu(&mut mid);
        add(x, &linear(&mid, n, &b.fc2));
        e.next += 1;
        e.next == self.blocks.len()
    }

    /// Post-norm and projector of an encode whose blocks have all run:
    /// the soft tokens `[tokens_per_image, text_hidden]`.
    pub fn finish(&self, mut e: SiglipEncoding) -> Vec<f32> {
        while !self.advance(&mut e) {}
        let x = layer_norm(&e.x, &self.post, self.config.layer_norm_eps as f32);
        self.project(&x, self.config.patches_per_side())
    }

    /// Encoder blocks (the steps of an encode).
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Full (bidirectional) multi-head attention over the patches,
    /// scaled by `1/√hd`.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let heads = self.config.num_attention_heads;
        let hd = self.config.hidden_size / heads;
        let bf16 = self.blocks.first().is_some_and(|b| b.q.0.dtype() == gemma_core::DType::BF16);
        super::attention::full_attention(q, k, v, (heads, heads, hd), (hd as f32).powf(-0.5), bf16)
    }

    /// The projector: `x` `[side², hidden]` average-pooled to the token
    /// grid, RMS-normed with `(1 + w)`, projected to the text width.
    fn project(&self, x: &[f32], side: usize) -> Vec<f32> {
        let h = self.config.hidden_size;
        let tps = (self.tokens_per_image as f64).sqrt() as usize;
        let k = side / tps;
        let mut pooled = vec![0f32; tps * tps * h];
        for (t, row) in pooled.chunks_exact_mut(h).enumerate() {
            let (ty, tx) = (t / tps, t % tps);
            for py in ty * k..(ty + 1) * k {
                for px in tx * k..(tx + 1) * k {
                    add(row, &x[(py * side + px) * h..(py * side + px + 1) * h]);
                }
            }
            let inv = 1.0 / (k * k) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        }
        let eps = self.config.layer_norm_eps as f32;
        for row in pooled.chunks_exact_mut(h) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let r = 1.0 / (ms + eps).sqrt();
            row.iter_mut().zip(&self.mm_norm).for_each(|(v, w)| *v = *v * r * (1.0 + w));
        }
        let mut y = vec![0f32; tps * tps * self.text_hidden];
        matmul(&pooled, tps * tps, &self.mm_proj, &mut y);
        y
    }
}

/// `x·Wᵀ + b` for `x` `[n, in]`.
fn linear(x: &[f32], n: usize, (w, b): &(Matrix, Vec<f32>)) -> Vec<f32> {
    let mut y = vec![0f32; n * w.rows];
    matmul(x, n, w, &mut y);
    for row in y.chunks_exact_mut(w.rows) {
        add(row, b);
    }
    y
}

/// LayerNorm of each row (biased variance), with gain and bias.
fn layer_norm(x: &[f32], (w, b): &(Vec<f32>, Vec<f32>), eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let mean = xr.iter().sum::<f32>() / d as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let r = 1.0 / (var + eps).sqrt();
        for (((o, &v), &g), &bb) in yr.iter_mut().zip(xr).zip(w).zip(b) {
            *o = (v - mean) * r * g + bb;
        }
    }
    y
}

/// `a += b`.
fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}
