//! Gemma 4's mixture-of-experts block backwards, experts and router frozen:
//! `sum = norm_d(dense) + norm_e(Σ_k s_k q_k · expert_k(norm_p(r)))`, the
//! top-k experts `k` of each row routed from `r` (softmax over all experts,
//! renormalized over the top k: `q`, times each expert's scale `s`). Given
//! the gradient of `sum`, the gradient of the dense MLP's output and the
//! residual `r`'s share (through the experts and through the router's
//! weights; the choice of experts itself is piecewise constant).
//! [`moe_backward_ref`] is the generic reference (f64-checked by finite
//! differences); [`moe_backward`] is training's path on the loaded weights.

use super::geglu::{gelu, geglu_backward, geglu_backward_f32};
use super::linear::linear_backward;
use super::norm::{rms_norm, rms_norm_backward};
use crate::real::Real;
use gemma_model::weights::MoeWeights;
use gemma_model::LayerTape;

/// The block's weights as plain row-major values (the reference's input).
#[derive(Debug, Clone)]
pub struct MoeRef<T> {
    /// Router `[E, h]`.
    pub router: Vec<T>,
    /// Router input scale `[h]`.
    pub router_scale: Vec<T>,
    /// Per-expert output scale `[E]`.
    pub expert_scale: Vec<T>,
    /// Each expert's `[2·ff, h]` gate and up rows.
    pub gate_up: Vec<Vec<T>>,
    /// Each expert's `[h, ff]` down projection.
    pub down: Vec<Vec<T>>,
    /// Experts' input norm `[h]`.
    pub pre_norm: Vec<T>,
    /// Dense output norm `[h]`.
    pub post_dense: Vec<T>,
    /// Experts' output norm `[h]`.
    pub post_experts: Vec<T>,
}

/// `y[m] = w[m, k] · x[k]`.
fn mv<T: Real>(w: &[T], x: &[T], y: &mut [T]) {
    let k = x.len();
    for (o, row) in y.iter_mut().zip(w.chunks_exact(k)) {
        *o = row.iter().zip(x).fold(T::of(0.0), |s, (&a, &b)| s + a * b);
    }
}

/// `dx[k] += wᵀ[k, m] · dy[m]`.
fn mtv<T: Real>(w: &[T], dy: &[T], dx: &mut [T]) {
    let k = dx.len();
    for (&d, row) in dy.iter().zip(w.chunks_exact(k)) {
        dx.iter_mut().zip(row).for_each(|(o, &v)| *o += d * v);
    }
}

/// Router weights `q` (top-k renormalized softmax) of one row's experts `top`.
fn route_weights<T: Real>(m: &MoeRef<T>, r: &[T], top: &[usize], eps: f64) -> (Vec<T>, Vec<T>) {
    let h = r.len();
    let mut xr = vec![T::of(0.0); h];
    rms_norm(r, &vec![T::of(1.0); h], eps, &mut xr);
    let k = T::of((h as f64).powf(-0.5));
    xr.iter_mut().zip(&m.router_scale).for_each(|(v, &s)| *v = *v * s * k);
    let mut logits = vec![T::of(0.0); m.expert_scale.len()];
    mv(&m.router, &xr, &mut logits);
    let max = top.iter().map(|&e| logits[e].f64()).fold(f64::NEG_INFINITY, f64::max);
    let ex: Vec<T> = top.iter().map(|&e| (logits[e] - T::of(max)).exp()).collect();
    let z = ex.iter().fold(T::of(0.0), |s, &v| s + v);
    (ex.iter().map(|&v| v / z).collect(), xr)
}

/// Expert `e` on `x`: `(gate, up, down(gelu(gate) ⊙ up))`.
fn expert<T: Real>(m: &MoeRef<T>, e: usize, x: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
    let h = x.len();
    let ff = m.gate_up[e].len() / h / 2;
    let mut gu = vec![T::of(0.0); 2 * ff];
    mv(&m.gate_up[e], x, &mut gu);
    let (g, u) = (gu[..ff].to_vec(), gu[ff..].to_vec());
    let act: Vec<T> = g.iter().zip(&u).map(|(&a, &b)| gelu(a) * b).collect();
    let mut y = vec![T::of(0.0); h];
    mv(&m.down[e], &act, &mut y);
    (g, u, y)
}

/// The block's `sum` `[n, h]` for residual rows `r` and dense outputs
/// `dense`, each row's experts given by `tops` (the reference forward).
pub fn moe_forward_ref<T: Real>(m: &MoeRef<T>, r: &[T], dense: &[T], tops: &[Vec<usize>], eps: f64) -> Vec<T> {
    let h = m.pre_norm.len();
    let mut dn = vec![T::of(0.0); dense.len()];
    rms_norm(dense, &m.post_dense, eps, &mut dn);
    let mut xin = vec![T::of(0.0); r.len()];
    rms_norm(r, &m.pre_norm, eps, &mut xin);
    let mut raw = vec![T::of(0.0); r.len()];
    for (t, top) in tops.iter().enumerate() {
        let (q, _) = route_weights(m, &r[t * h..(t + 1) * h], top, eps);
        for (&e, &qe) in top.iter().zip(&q) {
            let (_, _, y) = expert(m, e, &xin[t * h..(t + 1) * h]);
            let w = qe * m.expert_scale[e];
            raw[t * h..(t + 1) * h].iter_mut().zip(&y).for_each(|(o, &v)| *o += w * v);
        }
    }
    let mut en = vec![T::of(0.0); r.len()];
    rms_norm(&raw, &m.post_experts, eps, &mut en);
    dn.iter().zip(&en).map(|(&a, &b)| a + b).collect()
}

/// Gradients of [`moe_forward_ref`]: `(d dense, d r)` for `d sum`.
pub fn moe_backward_ref<T: Real>(m: &MoeRef<T>, r: &[T], dense: &[T], tops: &[Vec<usize>], eps: f64, dsum: &[T]) -> (Vec<T>, Vec<T>) {
    let h = m.pre_norm.len();
    let n = r.len() / h;
    let mut ddense = vec![T::of(0.0); dense.len()];
    rms_norm_backward(dense, &m.post_dense, eps, dsum, &mut ddense);
    let mut xin = vec![T::of(0.0); r.len()];
    rms_norm(r, &m.pre_norm, eps, &mut xin);
    // The experts' raw sum again, for its norm's backward.
    let mut raw = vec![T::of(0.0); r.len()];
    let mut qs = Vec::with_capacity(n);
    for (t, top) in tops.iter().enumerate() {
        let (q, _) = route_weights(m, &r[t * h..(t + 1) * h], top, eps);
        for (&e, &qe) in top.iter().zip(&q) {
            let (_, _, y) = expert(m, e, &xin[t * h..(t + 1) * h]);
            raw[t * h..(t + 1) * h].iter_mut().zip(&y).for_each(|(o, &v)| *o += qe * m.expert_scale[e] * v);
        }
        qs.push(q);
    }
    let mut draw = vec![T::of(0.0); r.len()];
    rms_norm_backward(&raw, &m.post_experts, eps, dsum, &mut draw);
    let mut dxin = vec![T::of(0.0); r.len()];
    let mut dr = vec![T::of(0.0); r.len()];
    for (t, top) in tops.iter().enumerate() {
        let d = &draw[t * h..(t + 1) * h];
        let mut dq = Vec::with_capacity(top.len());
        for (&e, &qe) in top.iter().zip(&qs[t]) {
            let (g, u, y) = expert(m, e, &xin[t * h..(t + 1) * h]);
            let s = m.expert_scale[e];
            dq.push(s * y.iter().zip(d).fold(T::of(0.0), |a, (&y, &d)| a + y * d));
            let dy: Vec<T> = d.iter().map(|&v| v * qe * s).collect();
            let mut dact = vec![T::of(0.0); g.len()];
            mtv(&m.down[e], &dy, &mut dact);
            let (mut dg, mut du) = (vec![T::of(0.0); g.len()], vec![T::of(0.0); g.len()]);
            geglu_backward(&g, &u, &dact, &mut dg, &mut du);
            dg.extend_from_slice(&du);
            mtv(&m.gate_up[e], &dg, &mut dxin[t * h..(t + 1) * h]);
        }
        // Through the router: d logit_e = q_e (dq_e − Σ_j q_j dq_j) over the top k.
        let q = &qs[t];
        let mean = q.iter().zip(&dq).fold(T::of(0.0), |a, (&q, &d)| a + q * d);
        let mut dlogits = vec![T::of(0.0); m.expert_scale.len()];
        for ((&e, &qe), &d) in top.iter().zip(q).zip(&dq) {
            dlogits[e] = qe * (d - mean);
        }
        let mut dxr = vec![T::of(0.0); h];
        mtv(&m.router, &dlogits, &mut dxr);
        let k = T::of((h as f64).powf(-0.5));
        dxr.iter_mut().zip(&m.router_scale).for_each(|(v, &s)| *v = *v * s * k);
        let mut d = vec![T::of(0.0); h];
        rms_norm_backward(&r[t * h..(t + 1) * h], &vec![T::of(1.0); h], eps, &dxr, &mut d);
        dr[t * h..(t + 1) * h].iter_mut().zip(&d).for_each(|(o, &v)| *o += v);
    }
    let mut d = vec![T::of(0.0); r.len()];
    rms_norm_backward(r, &m.pre_norm, eps, &dxin, &mut d);
    dr.iter_mut().zip(&d).for_each(|(o, &v)| *o += v);
    (ddense, dr)
}

/// Training's path: the gradient of the dense MLP's output, and the
/// residual's share added to `dr`, for `dsum` (the gradient of the block's
/// `sum`), from the forward's tape (`x_mid` is `r`, `down_out` the dense
/// output, `moe_raw` the experts' sum, `moe_routes` the routes).
pub fn moe_backward(w: &MoeWeights, t: &LayerTape, eps: f64, dsum: &[f32], dr: &mut [f32]) -> Vec<f32> {
    let h = w.pre_norm.len();
    let n = dsum.len() / h;
    let experts = w.gate_up.len();
    let mut ddense = vec![0f32; n * h];
    rms_norm_backward(&t.down_out, &w.post_norm_dense, eps, dsum, &mut ddense);
    let mut draw = vec![0f32; n * h];
    rms_norm_backward(&t.moe_raw, &w.post_norm_experts, eps, dsum, &mut draw);
    let r = &t.x_mid;
    let mut xin = vec![0f32; n * h];
    rms_norm(r, &w.pre_norm, eps, &mut xin);
    // d q of each route, in route order.
    let mut dq = vec![0f32; t.moe_routes.len()];
    let mut dxin = vec![0f32; n * h];
    for e in 0..experts {
        let picked: Vec<(usize, usize, f32)> = t.moe_routes.iter().enumerate().filter(|(_, r)| r.1 == e).map(|(i, r)| (i, r.0, r.2)).collect();
        if picked.is_empty() {
            continue;
        }
        let (m, ff) = (picked.len(), w.down[e].cols);
        let xs: Vec<f32> = picked.iter().flat_map(|&(_, row, _)| xin[row * h..(row + 1) * h].iter().copied()).collect();
        let mut gu = vec![0f32; m * 2 * ff];
        gemma_kernels::matmul_train(&xs, m, &w.gate_up[e], &mut gu);
        let (mut g, mut u) = (Vec::with_capacity(m * ff), Vec::with_capacity(m * ff));
        for row in gu.chunks_exact(2 * ff) {
            g.extend_from_slice(&row[..ff]);
            u.extend_from_slice(&row[ff..]);
        }
        let act: Vec<f32> = g.iter().zip(&u).map(|(&a, &b)| gelu(a) * b).collect();
        let mut y = vec![0f32; m * h];
        gemma_kernels::matmul_train(&act, m, &w.down[e], &mut y);
        let s = w.expert_scale[e];
        let mut dy = vec![0f32; m * h];
        for (k, &(i, row, q)) in picked.iter().enumerate() {
            let d = &draw[row * h..(row + 1) * h];
            dq[i] = s * y[k * h..(k + 1) * h].iter().zip(d).map(|(a, b)| a * b).sum::<f32>();
            dy[k * h..(k + 1) * h].iter_mut().zip(d).for_each(|(o, &v)| *o = v * q * s);
        }
        let mut dact = vec![0f32; m * ff];
        linear_backward(&w.down[e], None, None, &[], m, &dy, &mut dact);
        let (mut dg, mut du) = (vec![0f32; m * ff], vec![0f32; m * ff]);
        geglu_backward_f32(&g, &u, &dact, &mut dg, &mut du);
        let dgu: Vec<f32> = dg.chunks_exact(ff).zip(du.chunks_exact(ff)).flat_map(|(a, b)| a.iter().chain(b).copied()).collect();
        let mut dxs = vec![0f32; m * h];
        linear_backward(&w.gate_up[e], None, None, &[], m, &dgu, &mut dxs);
        for (k, &(_, row, _)) in picked.iter().enumerate() {
            dxin[row * h..(row + 1) * h].iter_mut().zip(&dxs[k * h..(k + 1) * h]).for_each(|(o, &v)| *o += v);
        }
    }
    // Through the router: d logit_e = q_e (dq_e − Σ_j q_j dq_j) over each row's top k.
    let mut dlogits = vec![0f32; n * experts];
    let mut mean = vec![0f32; n];
    for (&(row, _, q), &d) in t.moe_routes.iter().zip(&dq) {
        mean[row] += q * d;
    }
    for (&(row, e, q), &d) in t.moe_routes.iter().zip(&dq) {
        dlogits[row * experts + e] = q * (d - mean[row]);
    }
    let mut dxr = vec![0f32; n * h];
    linear_backward(&w.router, None, None, &[], n, &dlogits, &mut dxr);
    let k = (h as f32).powf(-0.5);
    for row in dxr.chunks_exact_mut(h) {
        row.iter_mut().zip(&w.router_scale).for_each(|(v, &s)| *v *= s * k);
    }
    let mut d = vec![0f32; n * h];
    rms_norm_backward(r, &vec![1.0; h], eps, &dxr, &mut d);
    dr.iter_mut().zip(&d).for_each(|(o, &v)| *o += v);
    rms_norm_backward(r, &w.pre_norm, eps, &dxin, &mut d);
    dr.iter_mut().zip(&d).for_each(|(o, &v)| *o += v);
    ddense
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};
    use gemma_core::{Matrix, Storage};

    const EPS: f64 = 1e-6;

    fn weights(h: usize, ff: usize, experts: usize) -> MoeRef<f64> {
        let v = |n: usize, salt: usize, s: f64| (0..n).map(|i| val(i, salt) * s).collect::<Vec<f64>>();
        MoeRef {
            router: v(experts * h, 21, 1.5),
            router_scale: (0..h).map(|i| 1.0 + val(i, 22) * 0.3).collect(),
            expert_scale: (0..experts).map(|i| 1.0 + val(i, 23) * 0.3).collect(),
            gate_up: (0..experts).map(|e| v(2 * ff * h, 30 + e, 0.6)).collect(),
            down: (0..experts).map(|e| v(h * ff, 50 + e, 0.6)).collect(),
            pre_norm: (0..h).map(|i| 1.0 + val(i, 24) * 0.3).collect(),
            post_dense: (0..h).map(|i| 1.0 + val(i, 25) * 0.3).collect(),
            post_experts: (0..h).map(|i| 1.0 + val(i, 26) * 0.3).collect(),
        }
    }

    /// Each row's top `k` experts by router logit (the forward's choice).
    fn tops(m: &MoeRef<f64>, r: &[f64], k: usize) -> Vec<Vec<usize>> {
        let h = m.pre_norm.len();
        let all: Vec<usize> = (0..m.expert_scale.len()).collect();
        r.chunks_exact(h)
            .map(|row| {
                let (_, xr) = route_weights(m, row, &all, EPS);
                let mut lg = vec![0.0; all.len()];
                mv(&m.router, &xr, &mut lg);
                let mut order = all.clone();
                order.sort_by(|&a, &b| lg[b].total_cmp(&lg[a]));
                order.truncate(k);
                order
            })
            .collect()
    }

    #[allow(clippy::type_complexity)]
    fn case() -> (MoeRef<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<Vec<usize>>) {
        let (n, h, ff, experts) = (3, 8, 6, 4);
        let m = weights(h, ff, experts);
        let r: Vec<f64> = (0..n * h).map(|i| val(i, 27) * 2.0).collect();
        let dense: Vec<f64> = (0..n * h).map(|i| val(i, 28)).collect();
        let dsum: Vec<f64> = (0..n * h).map(|i| val(i, 29)).collect();
        let t = tops(&m, &r, 2);
        (m, r, dense, dsum, t)
    }

    #[test]
    fn moe_backward_matches_finite_differences() {
        let (m, r, dense, dsum, tops) = case();
        let (ddense, dr) = moe_backward_ref(&m, &r, &dense, &tops, EPS, &dsum);
        let dot = |y: Vec<f64>| y.iter().zip(&dsum).map(|(a, b)| a * b).sum::<f64>();
        finite_diff("moe d dense", &dense, &ddense, &|d| dot(moe_forward_ref(&m, &r, d, &tops, EPS)));
        finite_diff("moe d r", &r, &dr, &|x| dot(moe_forward_ref(&m, x, &dense, &tops, EPS)));
    }

    /// Training's f32 path on loaded weights equals the reference.
    #[test]
    fn moe_backward_f32_equals_the_reference() {
        let (m, r, dense, dsum, tops) = case();
        let h = m.pre_norm.len();
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let mf = MoeRef {
            router: f(&m.router),
            router_scale: f(&m.router_scale),
            expert_scale: f(&m.expert_scale),
            gate_up: m.gate_up.iter().map(|v| f(v)).collect(),
            down: m.down.iter().map(|v| f(v)).collect(),
            pre_norm: f(&m.pre_norm),
            post_dense: f(&m.post_dense),
            post_experts: f(&m.post_experts),
        };
        let (rf, df, dsf) = (f(&r), f(&dense), f(&dsum));
        let (want_dd, want_dr) = moe_backward_ref(&mf, &rf, &df, &tops, EPS, &dsf);
        let ff = m.down[0].len() / h;
        let mat = |rows: usize, cols: usize, v: &[f32]| Matrix::new(rows, cols, Storage::F32(v.to_vec()));
        let w = MoeWeights {
            router: mat(m.expert_scale.len(), h, &mf.router),
            router_scale: mf.router_scale.clone(),
            expert_scale: mf.expert_scale.clone(),
            top_k: 2,
            gate_up: mf.gate_up.iter().map(|v| mat(2 * ff, h, v)).collect(),
            down: mf.down.iter().map(|v| mat(h, ff, v)).collect(),
            pre_norm: mf.pre_norm.clone(),
            post_norm_dense: mf.post_dense.clone(),
            post_norm_experts: mf.post_experts.clone(),
        };
        // The tape as the forward records it.
        let mut routes = Vec::new();
        let mut raw = vec![0f32; r.len()];
        let mut xin = vec![0f32; r.len()];
        rms_norm(&rf, &mf.pre_norm, EPS, &mut xin);
        for (t, top) in tops.iter().enumerate() {
            let (q, _) = route_weights(&mf, &rf[t * h..(t + 1) * h], top, EPS);
            for (&e, &qe) in top.iter().zip(&q) {
                routes.push((t, e, qe));
                let (_, _, y) = expert(&mf, e, &xin[t * h..(t + 1) * h]);
                raw[t * h..(t + 1) * h].iter_mut().zip(&y).for_each(|(o, &v)| *o += qe * mf.expert_scale[e] * v);
            }
        }
        let t = LayerTape { x_mid: rf.clone(), down_out: df.clone(), moe_raw: raw, moe_routes: routes, ..LayerTape::default() };
        let mut dr = vec![0f32; r.len()];
        let dd = moe_backward(&w, &t, EPS, &dsf, &mut dr);
        for (got, want) in dd.iter().zip(&want_dd).chain(dr.iter().zip(&want_dr)) {
            assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "{got} vs {want}");
        }
    }
}
