//! Gemma 3n's own steps backwards, their weights frozen: AltUp predict and
//! correct (the streams mixed by coefficients that a tanh router computes
//! from the active stream or the block's output), the final collapse of the
//! streams (each unembedded and rescaled to stream 0's magnitude), LAuReL's
//! low-rank residual and the gaussian top-k sparse gate. Generic over
//! [`Real`]: the f64 instances are checked by finite differences; training
//! runs the f32 ones (the large unembedding and LAuReL products through the
//! frozen-weight kernels).

use super::linear::linear_backward;
use super::norm::{rms_norm, rms_norm_backward};
use crate::real::Real;
use gemma_core::Matrix;

/// One layer's AltUp weights as plain values.
#[derive(Debug, Clone)]
pub struct AltUpRef<T> {
    /// Router `[S, h]`.
    pub router: Vec<T>,
    /// Router input norm `[h]`.
    pub router_norm: Vec<T>,
    /// Prediction coefficients `[S·S, S]`.
    pub prediction: Vec<T>,
    /// Correction coefficients `[S, S]`.
    pub correction: Vec<T>,
    /// Streams.
    pub s: usize,
    /// The active stream.
    pub active: usize,
}

/// `tanh(router(norm(x) / h))` of one row `x` `[h]`: `[S]`.
fn modalities<T: Real>(w: &AltUpRef<T>, x: &[T], eps: f64) -> Vec<T> {
    let h = x.len();
    let mut xr = vec![T::of(0.0); h];
    rms_norm(x, &w.router_norm, eps, &mut xr);
    let inv = T::of(1.0 / h as f64);
    (0..w.s).map(|i| w.router[i * h..(i + 1) * h].iter().zip(&xr).fold(T::of(0.0), |a, (&r, &v)| a + r * v * inv).tanh()).collect()
}

/// Adds to `dx` the gradient through [`modalities`] of row `x` for `dm` `[S]`.
fn modalities_backward<T: Real>(w: &AltUpRef<T>, x: &[T], eps: f64, dm: &[T], dx: &mut [T]) {
    let h = x.len();
    let m = modalities(w, x, eps);
    let inv = T::of(1.0 / h as f64);
    let mut dxr = vec![T::of(0.0); h];
    for i in 0..w.s {
        let dz = dm[i] * (T::of(1.0) - m[i] * m[i]) * inv;
        dxr.iter_mut().zip(&w.router[i * h..(i + 1) * h]).for_each(|(o, &r)| *o += dz * r);
    }
    let mut d = vec![T::of(0.0); h];
    rms_norm_backward(x, &w.router_norm, eps, &dxr, &mut d);
    dx.iter_mut().zip(&d).for_each(|(o, &v)| *o += v);
}

/// Row `t`'s slice of stream `i` of `[S, n, h]` values.
fn row(i: usize, t: usize, n: usize, h: usize) -> std::ops::Range<usize> {
    (i * n + t) * h..(i * n + t + 1) * h
}

/// AltUp predict of streams `st` `[S, n, h]`: `P_q = S_q + Σ_p c[q·S+p] · S_p`,
/// `c = prediction · modalities(S_active)`.
pub fn predict<T: Real>(w: &AltUpRef<T>, st: &[T], h: usize, eps: f64) -> Vec<T> {
    let s = w.s;
    let n = st.len() / s / h;
    let mut out = st.to_vec();
    for t in 0..n {
        let m = modalities(w, &st[row(w.active, t, n, h)], eps);
        let c: Vec<T> = (0..s * s).map(|r| (0..s).fold(T::of(0.0), |a, j| a + w.prediction[r * s + j] * m[j])).collect();
        for q in 0..s {
            for p in 0..s {
                let (src, dst) = (row(p, t, n, h), row(q, t, n, h));
                for k in 0..h {
                    out[dst.start + k] += c[q * s + p] * st[src.start + k];
                }
            }
        }
    }
    out
}

/// Gradient of [`predict`]: `d streams` for `dp` (the predictions' gradient).
pub fn predict_backward<T: Real>(w: &AltUpRef<T>, st: &[T], h: usize, eps: f64, dp: &[T]) -> Vec<T> {
    let s = w.s;
    let n = st.len() / s / h;
    let mut ds = dp.to_vec();
    for t in 0..n {
        let a = row(w.active, t, n, h);
        let m = modalities(w, &st[a.clone()], eps);
        let c: Vec<T> = (0..s * s).map(|r| (0..s).fold(T::of(0.0), |acc, j| acc + w.prediction[r * s + j] * m[j])).collect();
        let mut dc = vec![T::of(0.0); s * s];
        for q in 0..s {
            let dq = &dp[row(q, t, n, h)];
            for p in 0..s {
                let sp = row(p, t, n, h);
                dc[q * s + p] = dq.iter().zip(&st[sp.clone()]).fold(T::of(0.0), |acc, (&d, &v)| acc + d * v);
                for k in 0..h {
                    ds[sp.start + k] += c[q * s + p] * dq[k];
                }
            }
        }
        let dm: Vec<T> = (0..s).map(|j| (0..s * s).fold(T::of(0.0), |acc, r| acc + w.prediction[r * s + j] * dc[r])).collect();
        let mut dx = vec![T::of(0.0); h];
        modalities_backward(w, &st[a.clone()], eps, &dm, &mut dx);
        ds[a].iter_mut().zip(&dx).for_each(|(o, &v)| *o += v);
    }
    ds
}

/// AltUp correct of predictions `p` `[S, n, h]` from the block's output `y`
/// `[n, h]`: `C_i = P_i + (y − P_active) · (1 + correction · modalities(y))_i`.
pub fn correct<T: Real>(w: &AltUpRef<T>, p: &[T], y: &[T], h: usize, eps: f64) -> Vec<T> {
    let s = w.s;
    let n = y.len() / h;
    let mut out = p.to_vec();
    for t in 0..n {
        let yt = &y[t * h..(t + 1) * h];
        let m = modalities(w, yt, eps);
        let a = row(w.active, t, n, h);
        for i in 0..s {
            let c = T::of(1.0) + (0..s).fold(T::of(0.0), |acc, j| acc + w.correction[i * s + j] * m[j]);
            let dst = row(i, t, n, h);
            for k in 0..h {
                out[dst.start + k] += (yt[k] - p[a.start + k]) * c;
            }
        }
    }
    out
}

/// Gradient of [`correct`]: `(d predictions, d y)` for `dc`.
pub fn correct_backward<T: Real>(w: &AltUpRef<T>, p: &[T], y: &[T], h: usize, eps: f64, dc: &[T]) -> (Vec<T>, Vec<T>) {
    let s = w.s;
    let n = y.len() / h;
    let mut dp = dc.to_vec();
    let mut dy = vec![T::of(0.0); y.len()];
    for t in 0..n {
        let yt = &y[t * h..(t + 1) * h];
        let m = modalities(w, yt, eps);
        let a = row(w.active, t, n, h);
        let innov: Vec<T> = yt.iter().zip(&p[a.clone()]).map(|(&v, &q)| v - q).collect();
        let mut dinnov = vec![T::of(0.0); h];
        let mut dcoef = vec![T::of(0.0); s];
        for i in 0..s {
            let c = T::of(1.0) + (0..s).fold(T::of(0.0), |acc, j| acc + w.correction[i * s + j] * m[j]);
            let di = &dc[row(i, t, n, h)];
            dinnov.iter_mut().zip(di).for_each(|(o, &d)| *o += d * c);
            dcoef[i] = di.iter().zip(&innov).fold(T::of(0.0), |acc, (&d, &v)| acc + d * v);
        }
        let dyt = &mut dy[t * h..(t + 1) * h];
        dyt.iter_mut().zip(&dinnov).for_each(|(o, &d)| *o += d);
        dp[a].iter_mut().zip(&dinnov).for_each(|(o, &d)| *o -= d);
        let dm: Vec<T> = (0..s).map(|j| (0..s).fold(T::of(0.0), |acc, i| acc + w.correction[i * s + j] * dcoef[i])).collect();
        modalities_backward(w, yt, eps, &dm, dyt);
    }
    (dp, dy)
}

/// `y · rms(x0) / max(rms(y), √1e-5)` row by row (the forward's rescaling).
fn match_magnitude<T: Real>(x0: &[T], y: &[T], h: usize) -> Vec<T> {
    let mut out = y.to_vec();
    for (r0, ry) in x0.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let target = (r0.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / h as f64).sqrt();
        let mag = (ry.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / h as f64).max(1e-5).sqrt();
        ry.iter_mut().for_each(|v| *v *= T::of(target / mag));
    }
    out
}

/// Adds to `dx0` and `dy` the gradient of [`match_magnitude`] for `dz`.
fn match_magnitude_backward<T: Real>(x0: &[T], y: &[T], h: usize, dz: &[T], dx0: &mut [T], dy: &mut [T]) {
    for (((r0, ry), dr), (d0, dyr)) in x0.chunks_exact(h).zip(y.chunks_exact(h)).zip(dz.chunks_exact(h)).zip(dx0.chunks_exact_mut(h).zip(dy.chunks_exact_mut(h))) {
        let target = (r0.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / h as f64).sqrt();
        let ms = ry.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / h as f64;
        let mag = ms.max(1e-5).sqrt();
        let dot = dr.iter().zip(ry).map(|(a, b)| a.f64() * b.f64()).sum::<f64>();
        // d/dy of y·T/M, M = √(mean y²) when above the floor.
        let c = if ms > 1e-5 { target * dot / (h as f64 * mag * mag * mag) } else { 0.0 };
        dyr.iter_mut().zip(dr).zip(ry).for_each(|((o, &d), &v)| *o += d * T::of(target / mag) - v * T::of(c));
        if target > 0.0 {
            let dt = dot / mag / (h as f64 * target);
            d0.iter_mut().zip(r0).for_each(|(o, &v)| *o += v * T::of(dt));
        }
    }
}

/// The final hidden state from streams `st` `[S, n, h]`: the mean of stream 0
/// and each other stream unembedded (`unembed[i-1]` `[h, h]`) and rescaled
/// to stream 0's magnitude.
pub fn collapse<T: Real>(unembed: &[Vec<T>], st: &[T], h: usize) -> Vec<T> {
    let s = unembed.len() + 1;
    let len = st.len() / s;
    let mut x = st[..len].to_vec();
    for (i, u) in unembed.iter().enumerate() {
        let si = &st[(i + 1) * len..(i + 2) * len];
        let mut y = vec![T::of(0.0); len];
        for (yr, xr) in y.chunks_exact_mut(h).zip(si.chunks_exact(h)) {
            for (o, ur) in yr.iter_mut().zip(u.chunks_exact(h)) {
                *o = ur.iter().zip(xr).fold(T::of(0.0), |a, (&w, &v)| a + w * v);
            }
        }
        let z = match_magnitude(&st[..len], &y, h);
        x.iter_mut().zip(&z).for_each(|(a, &b)| *a += b);
    }
    let inv = T::of(1.0 / s as f64);
    x.iter_mut().for_each(|v| *v *= inv);
    x
}

/// Gradient of [`collapse`] for `dx` `[n, h]`: `d streams` `[S, n, h]`. The
/// unembedding products go through `unembed_t` (`dy ↦ dy · U`, the frozen
/// weights' input gradient) and `unembed_y` (`s ↦ U·s`).
pub fn collapse_backward<T: Real>(
    s: usize,
    st: &[T],
    h: usize,
    dx: &[T],
    unembed_y: &dyn Fn(usize, &[T]) -> Vec<T>,
    unembed_t: &dyn Fn(usize, &[T]) -> Vec<T>,
) -> Vec<T> {
    let len = st.len() / s;
    let inv = T::of(1.0 / s as f64);
    let dz: Vec<T> = dx.iter().map(|&v| v * inv).collect();
    let mut ds = vec![T::of(0.0); st.len()];
    ds[..len].copy_from_slice(&dz);
    for i in 1..s {
        let y = unembed_y(i - 1, &st[i * len..(i + 1) * len]);
        let mut dy = vec![T::of(0.0); len];
        let (d0, rest) = ds.split_at_mut(len);
        match_magnitude_backward(&st[..len], &y, h, &dz, d0, &mut dy);
        let d = unembed_t(i - 1, &dy);
        rest[(i - 1) * len..i * len].iter_mut().zip(&d).for_each(|(o, &v)| *o += v);
    }
    ds
}

/// [`collapse_backward`] on the loaded unembedding matrices (f32).
pub fn collapse_backward_f32(unembed: &[Matrix], st: &[f32], h: usize, dx: &[f32]) -> Vec<f32> {
    let n = dx.len() / h;
    let y = |i: usize, x: &[f32]| {
        let mut y = vec![0f32; x.len()];
        gemma_kernels::matmul_train(x, n, &unembed[i], &mut y);
        y
    };
    let t = |i: usize, dy: &[f32]| {
        let mut d = vec![0f32; dy.len()];
        linear_backward(&unembed[i], None, None, &[], n, dy, &mut d);
        d
    };
    collapse_backward(unembed.len() + 1, st, h, dx, &y, &t)
}

/// The gaussian top-k sparse gate `relu(g − (mean(g) + k·std(g)))` of each `ff`-wide row.
pub fn sparse_gate<T: Real>(g: &[T], ff: usize, k: f64) -> Vec<T> {
    let mut out = g.to_vec();
    for row in out.chunks_exact_mut(ff) {
        let mean = row.iter().map(|v| v.f64()).sum::<f64>() / ff as f64;
        let std = (row.iter().map(|v| (v.f64() - mean).powi(2)).sum::<f64>() / ff as f64).sqrt();
        let cut = T::of(mean + k * std);
        row.iter_mut().for_each(|v| *v = if *v > cut { *v - cut } else { T::of(0.0) });
    }
    out
}

/// Gradient of [`sparse_gate`] for `d` (the sparse gate's gradient).
pub fn sparse_gate_backward<T: Real>(g: &[T], ff: usize, k: f64, d: &[T]) -> Vec<T> {
    let mut out = vec![T::of(0.0); g.len()];
    for ((row, dr), o) in g.chunks_exact(ff).zip(d.chunks_exact(ff)).zip(out.chunks_exact_mut(ff)) {
        let mean = row.iter().map(|v| v.f64()).sum::<f64>() / ff as f64;
        let std = (row.iter().map(|v| (v.f64() - mean).powi(2)).sum::<f64>() / ff as f64).sqrt();
        let cut = mean + k * std;
        // Σ of the passed gradients, each of which also pulls on the cutoff.
        let pass: f64 = row.iter().zip(dr).filter(|(v, _)| v.f64() > cut).map(|(_, d)| d.f64()).sum();
        for ((o, &v), &dv) in o.iter_mut().zip(row).zip(dr) {
            let dcut = 1.0 / ff as f64 + if std > 0.0 { k * (v.f64() - mean) / (ff as f64 * std) } else { 0.0 };
            *o = T::of(if v.f64() > cut { dv.f64() } else { 0.0 } - pass * dcut);
        }
    }
    out
}

/// LAuReL's delta `norm(right(left(h)))` backwards: `J ᵀ · d` for the delta's
/// gradient `d`, from `z = right(left(h))` (the tape's `laurel_z`).
pub fn laurel_backward(left: &Matrix, right: &Matrix, norm: &[f32], z: &[f32], eps: f64, d: &[f32]) -> Vec<f32> {
    let n = d.len() / norm.len();
    let mut dz = vec![0f32; d.len()];
    rms_norm_backward(z, norm, eps, d, &mut dz);
    let mut dt = vec![0f32; n * left.rows];
    linear_backward(right, None, None, &[], n, &dz, &mut dt);
    let mut dh = vec![0f32; d.len()];
    linear_backward(left, None, None, &[], n, &dt, &mut dh);
    dh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};

    const EPS: f64 = 1e-6;
    const H: usize = 6;
    const N: usize = 2;

    fn weights() -> AltUpRef<f64> {
        let s = 3;
        AltUpRef {
            router: (0..s * H).map(|i| val(i, 41) * 2.0).collect(),
            router_norm: (0..H).map(|i| 1.0 + val(i, 42) * 0.3).collect(),
            prediction: (0..s * s * s).map(|i| val(i, 43) * 0.5).collect(),
            correction: (0..s * s).map(|i| val(i, 44) * 0.5).collect(),
            s,
            active: 1,
        }
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn predict_backward_matches_finite_differences() {
        let w = weights();
        let st: Vec<f64> = (0..w.s * N * H).map(|i| val(i, 45) * 2.0).collect();
        let dp: Vec<f64> = (0..st.len()).map(|i| val(i, 46)).collect();
        let ds = predict_backward(&w, &st, H, EPS, &dp);
        finite_diff("altup predict", &st, &ds, &|x| dot(&predict(&w, x, H, EPS), &dp));
    }

    #[test]
    fn correct_backward_matches_finite_differences() {
        let w = weights();
        let p: Vec<f64> = (0..w.s * N * H).map(|i| val(i, 47) * 2.0).collect();
        let y: Vec<f64> = (0..N * H).map(|i| val(i, 48) * 2.0).collect();
        let dc: Vec<f64> = (0..p.len()).map(|i| val(i, 49)).collect();
        let (dp, dy) = correct_backward(&w, &p, &y, H, EPS, &dc);
        finite_diff("altup correct d p", &p, &dp, &|x| dot(&correct(&w, x, &y, H, EPS), &dc));
        finite_diff("altup correct d y", &y, &dy, &|x| dot(&correct(&w, &p, x, H, EPS), &dc));
    }

    #[test]
    fn collapse_backward_matches_finite_differences() {
        let s = 3;
        let unembed: Vec<Vec<f64>> = (0..s - 1).map(|u| (0..H * H).map(|i| val(i, 50 + u) * 0.8).collect()).collect();
        let st: Vec<f64> = (0..s * N * H).map(|i| val(i, 53) * 2.0).collect();
        let dx: Vec<f64> = (0..N * H).map(|i| val(i, 54)).collect();
        let y = |i: usize, x: &[f64]| {
            let mut y = vec![0.0; x.len()];
            for (yr, xr) in y.chunks_exact_mut(H).zip(x.chunks_exact(H)) {
                for (o, ur) in yr.iter_mut().zip(unembed[i].chunks_exact(H)) {
                    *o = dot(ur, xr);
                }
            }
            y
        };
        let t = |i: usize, d: &[f64]| {
            let mut out = vec![0.0; d.len()];
            for (or, dr) in out.chunks_exact_mut(H).zip(d.chunks_exact(H)) {
                for (&dv, ur) in dr.iter().zip(unembed[i].chunks_exact(H)) {
                    or.iter_mut().zip(ur).for_each(|(o, &u)| *o += dv * u);
                }
            }
            out
        };
        let ds = collapse_backward(s, &st, H, &dx, &y, &t);
        finite_diff("altup collapse", &st, &ds, &|x| dot(&collapse(&unembed, x, H), &dx));
    }

    #[test]
    fn sparse_gate_backward_matches_finite_differences() {
        let ff = 10;
        let g: Vec<f64> = (0..N * ff).map(|i| val(i, 55) * 3.0).collect();
        let d: Vec<f64> = (0..g.len()).map(|i| val(i, 56)).collect();
        let k = 0.3;
        let dg = sparse_gate_backward(&g, ff, k, &d);
        finite_diff("sparse gate", &g, &dg, &|x| dot(&sparse_gate(x, ff, k), &d));
        let sg = sparse_gate(&g, ff, k);
        assert!(sg.contains(&0.0) && sg.iter().any(|&v| v > 0.0));
    }
}
