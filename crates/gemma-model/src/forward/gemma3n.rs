//! The forward's Gemma 3n steps (called from the block in `forward/mod.rs`):
//! the AltUp streams (expand, predict, correct, collapse), LAuReL and the
//! gaussian top-k sparse gate, as transformers 5.x `Gemma3nTextModel` runs them.

use crate::config::AltUpSpec;
use crate::forward::{Model, Seg};
use crate::weights::{AltUpLayerWeights, LaurelWeights};
use crate::workspace::buf;
use gemma_kernels::ops::rms_norm_in_place;

/// Activation sparsity on `gate` `[n, ff]`: each row becomes
/// `relu(g − (mean(g) + k · std(g)))` (population std), as transformers'
/// `_gaussian_topk`.
pub(crate) fn sparsify_gate(gate: &mut [f32], ff: usize, k: f32) {
    for row in gate.chunks_exact_mut(ff) {
        let mean = (row.iter().map(|&v| v as f64).sum::<f64>() / ff as f64) as f32;
        let var = row.iter().map(|&v| ((v - mean) as f64).powi(2)).sum::<f64>() / ff as f64;
        let cutoff = mean + (var.sqrt() as f32) * k;
        row.iter_mut().for_each(|v| *v = (*v - cutoff).max(0.0));
    }
}

/// `y · target_rms / max(rms(y), √1e-5)` row by row, `target_rms` from `x0`.
fn match_magnitude(x0: &[f32], y: &mut [f32], hidden: usize) {
    for (r0, ry) in x0.chunks_exact(hidden).zip(y.chunks_exact_mut(hidden)) {
        let target = (r0.iter().map(|v| v * v).sum::<f32>() / hidden as f32).sqrt();
        let mag = (ry.iter().map(|v| v * v).sum::<f32>() / hidden as f32).max(1e-5).sqrt();
        ry.iter_mut().for_each(|v| *v = *v * target / mag);
    }
}

/// The AltUp streams `[S, n, hidden]` into `streams` from the embeddings
/// `x` `[n, hidden]`: stream 0 is `x`, stream `i` is `proj_i(x)` rescaled
/// to `x`'s magnitude.
pub(crate) fn expand(m: &Model, segs: &[Seg], x: &[f32], streams: &mut Vec<f32>) {
    let Some(w) = &m.weights.altup else { return };
    let s = w.proj.len() + 1;
    let len = x.len();
    let st = buf(streams, s * len);
    st[..len].copy_from_slice(x);
    for (i, p) in w.proj.iter().enumerate() {
        let dst = &mut st[(i + 1) * len..(i + 2) * len];
        Model::project_plain(segs, x, p, dst);
        match_magnitude(x, dst, m.config.hidden_size);
    }
}

/// The final hidden state into `x` `[n, hidden]`: the mean of stream 0 and
/// every other stream unembedded and rescaled to stream 0's magnitude.
pub(crate) fn collapse(m: &Model, segs: &[Seg], streams: &[f32], x: &mut [f32]) {
    let Some(w) = &m.weights.altup else { return };
    let s = w.unembed.len() + 1;
    let len = x.len();
    let mut y = vec![0f32; len];
    x.copy_from_slice(&streams[..len]);
    for (i, u) in w.unembed.iter().enumerate() {
        Model::project_plain(segs, &streams[(i + 1) * len..(i + 2) * len], u, &mut y);
        match_magnitude(&streams[..len], &mut y, m.config.hidden_size);
        x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
    }
    let inv = s as f32;
    x.iter_mut().for_each(|v| *v /= inv);
}

/// The router's mixing weights `tanh(router(norm(x) / hidden))` `[n, S]`.
fn modalities(w: &AltUpLayerWeights, segs: &[Seg], x: &[f32], hidden: usize, eps: f32) -> Vec<f32> {
    let n = x.len() / hidden;
    let mut xr = x.to_vec();
    rms_norm_in_place(&mut xr, &w.router_norm, eps);
    let scale = 1.0 / hidden as f32;
    xr.iter_mut().for_each(|v| *v *= scale);
    let mut out = vec![0f32; n * w.router.rows];
    Model::project_plain(segs, &xr, &w.router, &mut out);
    out.iter_mut().for_each(|v| *v = v.tanh());
    out
}

/// AltUp predict, in place on `streams` `[S, n, hidden]`: stream `q`
/// becomes `s_q + Σ_p c[q·S + p] · s_p` with `c = prediction_coefs(modalities(s_active))`;
/// the active prediction is copied into `x`.
pub(crate) fn predict(w: &AltUpLayerWeights, spec: AltUpSpec, segs: &[Seg], streams: &mut [f32], x: &mut [f32], eps: f32) {
    let (s, len) = (spec.streams, x.len());
    let hidden = w.router_norm.len();
    let n = len / hidden;
    let md = modalities(w, segs, &streams[spec.active * len..(spec.active + 1) * len], hidden, eps);
    let old = streams[..s * len].to_vec();
    for t in 0..n {
        let m = &md[t * s..(t + 1) * s];
        // c[r] = Σ_j W[r][j] · m[j], r = q·S + p.
        let coef: Vec<f32> = (0..s * s).map(|r| (0..s).map(|j| w.prediction_coefs[r * s + j] * m[j]).sum()).collect();
        for q in 0..s {
            let dst = &mut streams[q * len + t * hidden..q * len + (t + 1) * hidden];
            for (hh, d) in dst.iter_mut().enumerate() {
                let mix: f32 = (0..s).map(|p| old[p * len + t * hidden + hh] * coef[q * s + p]).sum();
                *d = old[q * len + t * hidden + hh] + mix;
            }
        }
    }
    x.copy_from_slice(&streams[spec.active * len..(spec.active + 1) * len]);
}

/// AltUp correct, in place on the predictions `streams`: stream `i`
/// becomes `s_i + (x − s_active) · (1 + correction_coefs(modalities(x))_i)`
/// where `x` is the layer's output.
pub(crate) fn correct(w: &AltUpLayerWeights, spec: AltUpSpec, segs: &[Seg], streams: &mut [f32], x: &[f32], eps: f32) {
    let (s, len) = (spec.streams, x.len());
    let hidden = w.router_norm.len();
    let n = len / hidden;
    let md = modalities(w, segs, x, hidden, eps);
    let (a0, a1) = (spec.active * len, (spec.active + 1) * len);
    let innovation: Vec<f32> = x.iter().zip(&streams[a0..a1]).map(|(a, b)| a - b).collect();
    for t in 0..n {
        let m = &md[t * s..(t + 1) * s];
        for i in 0..s {
            let c: f32 = (0..s).map(|j| w.correction_coefs[i * s + j] * m[j]).sum::<f32>() + 1.0;
            let dst = &mut streams[i * len + t * hidden..i * len + (t + 1) * hidden];
            dst.iter_mut().zip(&innovation[t * hidden..(t + 1) * hidden]).for_each(|(d, v)| *d += v * c);
        }
    }
}

/// LAuReL: `out = h + norm(right(left(h)))` over `h` `[n, hidden]`;
/// `tape` records `right(left(h))` for the backward.
pub(crate) fn laurel(w: &LaurelWeights, segs: &[Seg], h: &[f32], out: &mut Vec<f32>, eps: f32, tape: Option<&mut crate::tape::LayerTape>) {
    let n = h.len() / w.left.cols;
    let mut t = vec![0f32; n * w.left.rows];
    Model::project_plain(segs, h, &w.left, &mut t);
    let out = buf(out, h.len());
    Model::project_plain(segs, &t, &w.right, out);
    if let Some(tp) = tape {
        crate::tape::record(&mut tp.laurel_z, out);
    }
    rms_norm_in_place(out, &w.norm, eps);
    out.iter_mut().zip(h).for_each(|(o, &v)| *o += v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::gemma3n::normal_quantile;

    #[test]
    fn sparsity_keeps_what_exceeds_the_cutoff() {
        let mut g: Vec<f32> = (0..100).map(|i| i as f32).collect();
        sparsify_gate(&mut g, 100, normal_quantile(0.95) as f32);
        let mean = 49.5f32;
        let std = (((0..100).map(|i| (i as f64 - 49.5).powi(2)).sum::<f64>() / 100.0).sqrt()) as f32;
        let cut = mean + std * 1.644_853_6;
        for (i, v) in g.iter().enumerate() {
            assert!((v - (i as f32 - cut).max(0.0)).abs() < 1e-4);
        }
        assert_eq!(g.iter().filter(|&&v| v > 0.0).count(), 3);
    }
}
