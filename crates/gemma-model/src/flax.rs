//! Weights from a Hugging Face Flax checkpoint (`flax_model.msgpack`, sharded
//! or not): the PyTorch names map onto Flax's parameter paths
//! (`model.layers.0.self_attn.q_proj.weight` → `model/layers/0/self_attn/q_proj/kernel`),
//! Linear kernels are stored `[in, out]` and transposed here, embeddings
//! are `embedding`, norms `weight` (holding `w`, applied as `1 + w` as in
//! PyTorch).

use crate::config::GemmaConfig;
use crate::weights::{Naming, Weights};
use gemma_core::{DType, GemmaError, Result, Storage};
use gemma_formats::FlaxCheckpoint;

/// `[rows, cols]` row-major values transposed to `[cols, rows]`.
fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| v[r * cols + c]));
    }
    out
}

/// The tensor a PyTorch-named weight is in the Flax checkpoint, PyTorch-shaped.
fn load(ck: &FlaxCheckpoint, name: &str) -> Result<(Vec<usize>, Storage)> {
    let base = name.strip_suffix(".weight").unwrap_or(name).replace('.', "/");
    if let Some(t) = ck.info(&format!("{base}/kernel")) {
        let (rows, cols) = match t.shape.as_slice() {
            [r, c] => (*r, *c),
            other => return Err(GemmaError::ShapeMismatch { name: format!("{base}/kernel"), expected: vec![0, 0], found: other.to_vec() }),
        };
        let (_, st) = ck.load(&format!("{base}/kernel"))?;
        let st = match st {
            Storage::F32(v) => Storage::F32(transpose(&v, rows, cols)),
            Storage::BF16(v) => Storage::BF16(transpose(&v, rows, cols)),
            Storage::F16(v) => Storage::F16(transpose(&v, rows, cols)),
            other => other,
        };
        return Ok((vec![cols, rows], st));
    }
    for leaf in ["embedding", "weight"] {
        let path = format!("{base}/{leaf}");
        if ck.info(&path).is_some() {
            return ck.load(&path);
        }
    }
    Err(GemmaError::MissingTensor { name: format!("{base}/kernel (Flax, for {name})") })
}

impl Weights {
    /// Load from a Flax checkpoint.
    pub fn from_flax(ck: &FlaxCheckpoint, cfg: &GemmaConfig, dtype: Option<DType>, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let source = |name: &str| load(ck, name);
        let has_head = ck.info("lm_head/kernel").is_some();
        Self::load(&source, Naming::HuggingFace { prefix: "model." }, cfg, has_head && !cfg.tie_word_embeddings, dtype, progress)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(super::transpose(&[1, 2, 3, 4, 5, 6], 2, 3), [1, 4, 2, 5, 3, 6]);
    }
}
