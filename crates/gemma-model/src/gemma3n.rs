//! Gemma 3n's config fields beyond Gemma 4's (AltUp, LAuReL, activation
//! sparsity; per-layer embeddings and KV sharing are shared with Gemma 4)
//! and the forward steps they add, as transformers 5.x
//! `Gemma3nTextConfig` / `Gemma3nTextModel` define them.

use crate::config::{AltUpSpec, Fields, LayerSpec};
use crate::forward::{Model, Seg};
use crate::gemma4::{kv_sharing, Extra};
use crate::weights::{AltUpLayerWeights, LaurelWeights};
use crate::workspace::buf;
use gemma_core::{GemmaError, Result};
use gemma_kernels::ops::rms_norm_in_place;
use serde_json::Value;

/// Read the Gemma 3n fields, adjusting `layers` in place.
pub(crate) fn parse(f: &Fields, layers: &mut [LayerSpec]) -> Result<Extra> {
    let n = layers.len();
    kv_sharing(f, layers)?;
    // Activation sparsity per layer (transformers' default: 0.95 on the
    // first 10 layers of models deeper than 10).
    let pattern: Vec<f64> = match f.get("activation_sparsity_pattern") {
        None | Some(Value::Null) => (0..n).map(|i| if n > 10 && i < 10 { 0.95 } else { 0.0 }).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_f64())
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| GemmaError::config(f.name("activation_sparsity_pattern"), "expected a list of numbers"))?,
        Some(v) => match v.as_f64() {
            Some(p) => vec![p; n],
            None => return Err(GemmaError::config(f.name("activation_sparsity_pattern"), format!("expected a list of numbers, found {v}"))),
        },
    };
    if pattern.len() != n {
        return Err(GemmaError::config(f.name("activation_sparsity_pattern"), format!("has {} entries, num_hidden_layers is {n}", pattern.len())));
    }
    for (l, (spec, &p)) in layers.iter_mut().zip(&pattern).enumerate() {
        if !(0.0..1.0).contains(&p) {
            return Err(GemmaError::config(f.name("activation_sparsity_pattern"), format!("layer {l}: {p} is not in [0, 1)")));
        }
        // torch: Normal(0, 1).icdf(p) in f32.
        spec.gate_sparsity_k = (p > 0.0).then(|| normal_quantile(p as f32 as f64) as f32);
    }
    let streams = f.usize_opt("altup_num_inputs")?.unwrap_or(4);
    let active = crate::gemma4::count(f, "altup_active_idx")?;
    if active >= streams {
        return Err(GemmaError::config(f.name("altup_active_idx"), format!("{active} is not below altup_num_inputs {streams}")));
    }
    let altup = AltUpSpec { streams, active, correct_scale: f.bool_opt("altup_correct_scale")?.unwrap_or(true) };
    let laurel_rank = f.usize_opt("laurel_rank")?.unwrap_or(64);
    let per_layer_input_size = f.usize_opt("hidden_size_per_layer_input")?.unwrap_or(256);
    let per_layer_vocab_size = f.usize_opt("vocab_size_per_layer_input")?.unwrap_or(262_144);
    Ok(Extra { per_layer_input_size, per_layer_vocab_size, moe: None, altup: Some(altup), laurel_rank })
}

/// The standard normal quantile `√2 · erfinv(2p − 1)`, by Newton's method
/// on an f64 `erf` (exact to ~1e-15 for the sparsities Gemma uses).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    let y = 2.0 * p - 1.0;
    // Start from a classic closed-form approximation, then polish.
    let a = 0.147;
    let ln = (1.0 - y * y).ln();
    let t = 2.0 / (std::f64::consts::PI * a) + ln / 2.0;
    let mut x = y.signum() * ((t * t - ln / a).sqrt() - t).sqrt();
    for _ in 0..8 {
        let d = erf(x) - y;
        x -= d / (std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp());
    }
    std::f64::consts::SQRT_2 * x
}

/// The standard normal CDF `(1 + erf(x/√2)) / 2` (the inverse of
/// [`normal_quantile`]; 0 at −∞).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return 0.0;
    }
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// `erf(x)` by its Taylor series (|x| < 3) or continued fraction of erfc.
fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        let (mut term, mut sum) = (x, x);
        for k in 1..200 {
            term *= -x * x / k as f64;
            let add = term / (2 * k + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        std::f64::consts::FRAC_2_SQRT_PI * sum
    } else {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))).
        let z = x.abs();
        let mut cf = z;
        for k in (1..60).rev() {
            cf = z + (k as f64 / 2.0) / cf;
        }
        let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / cf;
        x.signum() * (1.0 - erfc)
    }
}

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

    #[test]
    fn normal_quantile_matches_known_values() {
        // scipy.stats.norm.ppf
        for (p, q) in [(0.95, 1.6448536269514722), (0.5, 0.0), (0.9, 1.2815515655446004), (0.999, 3.090232306167813), (0.01, -2.3263478740408408)] {
            assert!((normal_quantile(p) - q).abs() < 1e-12, "{p}: {} vs {q}", normal_quantile(p));
        }
    }

    #[test]
    fn cdf_inverts_the_quantile_in_f32() {
        for p in [0.95f32, 0.5, 0.9, 0.99, 0.3] {
            let k = normal_quantile(p as f64) as f32;
            assert_eq!(normal_cdf(k as f64) as f32, p, "{p}");
        }
    }

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
