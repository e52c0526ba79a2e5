//! Causal attention of one sequence (positions `0..n`, optional sliding
//! window, Gemma 2 soft-cap, grouped key/value heads) and its backward in
//! FlashAttention-2's manner: nothing of size `n × n` is kept between the
//! forward and the backward; each query's probabilities are recomputed from
//! `q`, `k` (one row of at most `window` or `n` scores at a time).

use crate::real::Real;
use gemma_kernels::pool;
use gemma_model::attention::AttnShape;

/// Keys query `i` sees: `lo..=i`.
fn first_key(s: &AttnShape, i: usize) -> usize {
    (i + 1).saturating_sub(s.window)
}

/// The probabilities of query `i`, head `h` over keys `lo..=i` into `p`
/// (softcapped scores in `sc`).
#[allow(clippy::too_many_arguments)]
fn probabilities<T: Real>(s: &AttnShape, q: &[T], k: &[T], i: usize, h: usize, p: &mut Vec<T>, sc: &mut Vec<T>) -> usize {
    let (hd, qs, ks) = (s.head_dim, s.heads * s.head_dim, s.heads / s.group * s.head_dim);
    let g = h / s.group;
    let lo = first_key(s, i);
    let qi = &q[i * qs + h * hd..][..hd];
    p.clear();
    sc.clear();
    let scale = T::of(s.scale as f64);
    let mut max = f64::NEG_INFINITY;
    for j in lo..=i {
        let kj = &k[j * ks + g * hd..][..hd];
        let mut z = T::dot(qi, kj) * scale;
        if let Some(c) = s.softcap {
            let c = T::of(c as f64);
            z = c * (z / c).tanh();
        }
        max = max.max(z.f64());
        sc.push(z);
    }
    let m = T::of(max);
    let mut sum = 0f64;
    for &z in sc.iter() {
        let e = (z - m).exp();
        sum += e.f64();
        p.push(e);
    }
    let inv = T::of(1.0 / sum);
    p.iter_mut().for_each(|v| *v *= inv);
    lo
}

/// Reference forward: `out = softmax(mask(cap(scale · q·kᵀ)))·v`, `q, out:
/// [n, heads·hd]`, `k, v: [n, kv_heads·hd]`.
pub fn attention<T: Real>(s: &AttnShape, q: &[T], k: &[T], v: &[T], out: &mut [T]) {
    let (hd, qs, ks) = (s.head_dim, s.heads * s.head_dim, s.heads / s.group * s.head_dim);
    let n = q.len() / qs;
    let (mut p, mut sc) = (Vec::new(), Vec::new());
    for i in 0..n {
        for h in 0..s.heads {
            let lo = probabilities(s, q, k, i, h, &mut p, &mut sc);
            let o = &mut out[i * qs + h * hd..][..hd];
            o.iter_mut().for_each(|x| *x = T::default());
            for (j, &pj) in (lo..=i).zip(p.iter()) {
                for (a, &b) in o.iter_mut().zip(&v[j * ks + (h / s.group) * hd..][..hd]) {
                    *a += pj * b;
                }
            }
        }
    }
}

/// Gradients of [`attention`] for `dout` (overwrites `dq`, `dk`, `dv`):
/// `dv_j = Σ_i p_ij·do_i`, `ds_ij = p_ij (do_i·v_j − Σ_l p_il do_i·v_l)`
/// (times `1 − (s/cap)²` under a soft-cap), `dq_i = scale Σ_j ds_ij k_j`,
/// `dk_j = scale Σ_i ds_ij q_i`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Real>(s: &AttnShape, q: &[T], k: &[T], v: &[T], dout: &[T], dq: &mut [T], dk: &mut [T], dv: &mut [T]) {
    let n = q.len() / (s.heads * s.head_dim);
    attention_backward_segments(s, &[(0, n)], q, k, v, dout, dq, dk, dv);
}

/// [`attention_backward`] for several sequences laid end to end (`segs`:
/// `(first row, rows)` each), one task per (sequence, key/value head).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_segments<T: Real>(s: &AttnShape, segs: &[(usize, usize)], q: &[T], k: &[T], v: &[T], dout: &[T], dq: &mut [T], dk: &mut [T], dv: &mut [T]) {
    let (hd, qs, ks) = (s.head_dim, s.heads * s.head_dim, s.heads / s.group * s.head_dim);
    let kvh = s.heads / s.group;
    let (dqp, dkp, dvp) = (Ptr(dq.as_mut_ptr()), Ptr(dk.as_mut_ptr()), Ptr(dv.as_mut_ptr()));
    let task = |id: usize| {
        let ((r0, n), g) = (segs[id / kvh], id % kvh);
        let (mut p, mut sc, mut dp) = (Vec::new(), Vec::new(), Vec::new());
        let (q, k, v, dout) = (&q[r0 * qs..(r0 + n) * qs], &k[r0 * ks..(r0 + n) * ks], &v[r0 * ks..(r0 + n) * ks], &dout[r0 * qs..(r0 + n) * qs]);
        // This task's gradients, written into place at the end: dq for the
        // heads of key/value head g `[n, group·hd]`, dk and dv `[n, hd]`.
        let gw = s.group * hd;
        let (mut dq, mut dk, mut dv) = (vec![T::default(); n * gw], vec![T::default(); n * hd], vec![T::default(); n * hd]);
        let scale = T::of(s.scale as f64);
        for h in g * s.group..(g + 1) * s.group {
            for i in 0..n {
                let lo = probabilities(s, q, k, i, h, &mut p, &mut sc);
                let doi = &dout[i * qs + h * hd..][..hd];
                dp.clear();
                let mut dsum = 0f64;
                for (j, &pj) in (lo..=i).zip(p.iter()) {
                    let d = T::dot(doi, &v[j * ks + g * hd..][..hd]);
                    dsum += (pj * d).f64();
                    dp.push(d);
                }
                let dsum = T::of(dsum);
                let dqi = i * gw + (h - g * s.group) * hd;
                let qi = i * qs + h * hd;
                for (idx, j) in (lo..=i).enumerate() {
                    let pj = p[idx];
                    T::axpy(pj, doi, &mut dv[j * hd..(j + 1) * hd]);
                    let mut ds = pj * (dp[idx] - dsum);
                    if let Some(c) = s.softcap {
                        let t = sc[idx] / T::of(c as f64);
                        ds *= T::of(1.0) - t * t;
                    }
                    let ds = ds * scale;
                    let kj = j * ks + g * hd;
                    T::axpy(ds, &k[kj..kj + hd], &mut dq[dqi..dqi + hd]);
                    T::axpy(ds, &q[qi..qi + hd], &mut dk[j * hd..(j + 1) * hd]);
                }
            }
        }
        for i in 0..n {
            // SAFETY: rows r0+i of dq (columns of heads g·group..), dk and dv
            // (columns g·hd..) belong to this task alone; in bounds.
            unsafe {
                dqp.write((r0 + i) * qs + g * gw, &dq[i * gw..(i + 1) * gw]);
                dkp.write((r0 + i) * ks + g * hd, &dk[i * hd..(i + 1) * hd]);
                dvp.write((r0 + i) * ks + g * hd, &dv[i * hd..(i + 1) * hd]);
            }
        }
    };
    if segs.len() * kvh > 1 {
        pool::parallel_for(segs.len() * kvh, &task);
    } else {
        (0..segs.len() * kvh).for_each(task);
    }
}

/// A pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
// SAFETY: see `attention_backward_segments`: tasks touch disjoint elements.
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

impl<T: Copy> Ptr<T> {
    /// Copy `row` to elements `at..at + row.len()`.
    /// SAFETY: in bounds, and no other task writes these elements.
    unsafe fn write(&self, at: usize, row: &[T]) {
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), self.0.add(at), row.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};

    #[test]
    fn attention_backward_matches_finite_differences() {
        let (n, heads, group, hd) = (7, 4, 2, 4);
        for (window, softcap) in [(usize::MAX, None), (3, Some(1.5)), (usize::MAX, Some(0.8))] {
            let s = AttnShape { heads, group, head_dim: hd, window, scale: 0.7, softcap, causal: true };
            let (qs, ks) = (heads * hd, heads / group * hd);
            let q: Vec<f64> = (0..n * qs).map(|i| val(i, 11) * 1.5).collect();
            let k: Vec<f64> = (0..n * ks).map(|i| val(i, 12) * 1.5).collect();
            let v: Vec<f64> = (0..n * ks).map(|i| val(i, 13)).collect();
            let d: Vec<f64> = (0..n * qs).map(|i| val(i, 14)).collect();
            let (mut dq, mut dk, mut dv) = (vec![0.0; n * qs], vec![0.0; n * ks], vec![0.0; n * ks]);
            attention_backward(&s, &q, &k, &v, &d, &mut dq, &mut dk, &mut dv);
            let loss = |q: &[f64], k: &[f64], v: &[f64]| {
                let mut o = vec![0.0; n * qs];
                attention(&s, q, k, v, &mut o);
                o.iter().zip(&d).map(|(a, b)| a * b).sum::<f64>()
            };
            finite_diff("attention/q", &q, &dq, &|x| loss(x, &k, &v));
            finite_diff("attention/k", &k, &dk, &|x| loss(&q, x, &v));
            finite_diff("attention/v", &v, &dv, &|x| loss(&q, &k, x));
        }
    }

    /// The reference forward equals the model's streamed attention.
    #[test]
    fn reference_attention_equals_the_models() {
        use gemma_model::{GemmaConfig, KvCache};
        let cfg = GemmaConfig::from_json(&serde_json::json!({"architectures": ["Gemma2ForCausalLM"], "vocab_size": 10, "hidden_size": 16,
            "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 5}))
        .unwrap();
        let n = 20;
        let s = AttnShape { heads: 4, group: 2, head_dim: 8, window: 5, scale: 0.35, softcap: Some(3.0), causal: true };
        let q: Vec<f32> = (0..n * 32).map(|i| val(i, 21) as f32).collect();
        let k: Vec<f32> = (0..n * 16).map(|i| val(i, 22) as f32).collect();
        let v: Vec<f32> = (0..n * 16).map(|i| val(i, 23) as f32).collect();
        let mut cache = KvCache::unbounded(&cfg);
        for p in 0..n {
            cache.layers[0].store(p, &k[p * 16..(p + 1) * 16], &v[p * 16..(p + 1) * 16]);
        }
        let mut want = vec![0f32; n * 32];
        gemma_model::attention::attention(s, &q, &cache.layers[0], 0, &[], &mut want, &mut Vec::new(), &mut Vec::new(), &mut Vec::new());
        let mut got = vec![0f32; n * 32];
        attention(&s, &q, &k, &v, &mut got);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
