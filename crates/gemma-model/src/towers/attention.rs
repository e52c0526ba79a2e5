//! Full (bidirectional) multi-head attention over an image's patches, as
//! the vision encoders compute it: `softmax(scale · q·kᵀ)·v` per head, one
//! task per (head, block of queries) on all threads. A tower with bf16
//! weights on a CPU with bf16 products takes both products in bf16 (keys,
//! values, queries and probabilities rounded to bf16, sums in f32 — what
//! transformers computes for a bf16 checkpoint, whose attention inputs are
//! bf16), on the AMX-BF16 / AVX512-BF16 kernels (a last block of fewer than
//! 4 queries takes `matmul`'s few-row path: keys and values bf16, queries
//! and probabilities f32); otherwise f32.

use gemma_core::{Matrix, Storage};
use gemma_kernels::gemm_nn::gemm_nn;
use gemma_kernels::{matmul, pool};
use half::bf16;

/// Queries per task (the scores stay small at 4096 patches).
const QUERIES: usize = 128;
/// Queries per task of the bf16 path: as many as 4 MiB of scores hold
/// (256 at 4096 patches), from 32 to 512 — each packing of a head's keys
/// and values then serves many queries, and memory stays bounded.
fn queries_bf16(n: usize) -> usize {
    ((1usize << 22) / (4 * n.max(1))).clamp(32, 512)
}

/// `q: [n, heads·hd]`, `k, v: [n, kv_heads·hd]` (the heads `(heads, kv_heads, hd)`; query head `i` reads
/// key/value head `i / (heads / kv_heads)`); returns `[n, heads·hd]`.
/// `bf16`: the tower's weights are bf16 (see the module docs).
pub fn full_attention(q: &[f32], k: &[f32], v: &[f32], (heads, kv_heads, hd): (usize, usize, usize), scale: f32, bf16: bool) -> Vec<f32> {
    if bf16 && gemma_kernels::bf16_products().is_some() {
        return bf16_attention(q, k, v, heads, kv_heads, hd, scale);
    }
    let (qw, kw) = (heads * hd, kv_heads * hd);
    let n = q.len() / qw.max(1);
    let group = heads / kv_heads.max(1);
    // Head `i` of `m` (`w` wide) as `[n, hd]`, times `f`.
    let head = |m: &[f32], w: usize, i: usize, f: f32| -> Vec<f32> { m.chunks_exact(w).flat_map(|r| r[i * hd..(i + 1) * hd].iter().map(move |x| x * f)).collect() };
    // Keys transposed per head, `[hd, n]`: both products are then `A·B`
    // of row-major matrices for the broadcast kernel (`gemm_nn`).
    let transposed = |i: usize| -> Vec<f32> {
        let mut t = vec![0f32; hd * n];
        for (j, r) in k.chunks_exact(kw).enumerate() {
            for (c, &x) in r[i * hd..(i + 1) * hd].iter().enumerate() {
                t[c * n + j] = x;
            }
        }
        t
    };
    // Queries pre-scaled (`hd` products per row instead of `n`).
    let qs: Vec<Vec<f32>> = (0..heads).map(|i| head(q, qw, i, scale)).collect();
    let kts: Vec<Vec<f32>> = (0..kv_heads).map(transposed).collect();
    let vs: Vec<Vec<f32>> = (0..kv_heads).map(|i| head(v, kw, i, 1.0)).collect();
    let mut out = vec![0f32; n * qw];
    let blocks = n.div_ceil(QUERIES);
    let dst = pool::Disjoint::new(&mut out);
    pool::parallel_for(heads * blocks, &|task| {
        let (i, q0) = (task / blocks, (task % blocks) * QUERIES);
        let nq = QUERIES.min(n - q0);
        let mut sc = vec![0f32; nq * n];
        gemm_nn(&qs[i][q0 * hd..(q0 + nq) * hd], nq, hd, &kts[i / group], n, &mut sc);
        // Unnormalized probabilities; each output row is divided by its sum after `P·V`.
        let mut inv = Vec::with_capacity(nq);
        for row in sc.chunks_exact_mut(n) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            inv.push((1.0 / gemma_kernels::geglu::exp_shifted(row, max)) as f32);
        }
        let mut acc = vec![0f32; nq * hd];
        gemm_nn(&sc, nq, n, &vs[i / group], hd, &mut acc);
        for (r, &f) in acc.chunks_exact_mut(hd).zip(&inv) {
            r.iter_mut().for_each(|x| *x *= f);
        }
        for (t, r) in acc.chunks_exact(hd).enumerate() {
            let at = (q0 + t) * qw + i * hd;
            // SAFETY: head i's columns of rows q0..q0+nq belong to this task alone.
            unsafe { dst.range(at..at + hd) }.copy_from_slice(r);
        }
    });
    out
}

/// [`full_attention`] with both products on the bf16 kernels: per key/value
/// head, the keys `[n, hd]` and the values transposed `[hd, n]` as bf16
/// matrices, so `q·kᵀ` and `P·v` are `matmul`s with bf16 "weights".
fn bf16_attention(q: &[f32], k: &[f32], v: &[f32], heads: usize, kv_heads: usize, hd: usize, scale: f32) -> Vec<f32> {
    let (qw, kw) = (heads * hd, kv_heads * hd);
    let n = q.len() / qw.max(1);
    let group = heads / kv_heads.max(1);
    let keys: Vec<Matrix> = (0..kv_heads)
        .map(|i| Matrix::new(n, hd, Storage::BF16(k.chunks_exact(kw).flat_map(|r| r[i * hd..(i + 1) * hd].iter().map(|&x| bf16::from_f32(x))).collect())))
        .collect();
    let values: Vec<Matrix> = (0..kv_heads)
        .map(|i| {
            let mut t = vec![bf16::ZERO; hd * n];
            for (j, r) in v.chunks_exact(kw).enumerate() {
                for (c, &x) in r[i * hd..(i + 1) * hd].iter().enumerate() {
                    t[c * n + j] = bf16::from_f32(x);
                }
            }
            Matrix::new(hd, n, Storage::BF16(t))
        })
        .collect();
    let mut out = vec![0f32; n * qw];
    let per = queries_bf16(n);
    let blocks = n.div_ceil(per);
    let dst = pool::Disjoint::new(&mut out);
    pool::parallel_for(heads * blocks, &|task| {
        let (i, q0) = (task / blocks, (task % blocks) * per);
        let nq = per.min(n - q0);
        let qs: Vec<f32> = q[q0 * qw..(q0 + nq) * qw].chunks_exact(qw).flat_map(|r| r[i * hd..(i + 1) * hd].iter().map(|x| x * scale)).collect();
        let mut sc = vec![0f32; nq * n];
        matmul(&qs, nq, &keys[i / group], &mut sc);
        // Unnormalized probabilities; each output row is divided by its sum after `P·V`.
        let mut inv = Vec::with_capacity(nq);
        for row in sc.chunks_exact_mut(n) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            inv.push((1.0 / gemma_kernels::geglu::exp_shifted(row, max)) as f32);
        }
        let mut acc = vec![0f32; nq * hd];
        matmul(&sc, nq, &values[i / group], &mut acc);
        for (t, (r, &f)) in acc.chunks_exact(hd).zip(&inv).enumerate() {
            let at = (q0 + t) * qw + i * hd;
            // SAFETY: head i's columns of rows q0..q0+nq belong to this task alone.
            unsafe { dst.range(at..at + hd) }.iter_mut().zip(r).for_each(|(d, &x)| *d = x * f);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bf16 path is the f32 one within bf16 rounding (where this CPU has
    /// bf16 products; elsewhere both are the f32 path), GQA and a head
    /// width that is not a multiple of 32 included.
    #[test]
    fn bf16_attention_is_the_f32_one_within_bf16_rounding() {
        let (heads, kv, hd, n) = (4, 2, 72, 300);
        let val = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 1999) as f32 / 999.5 - 1.0;
        let q: Vec<f32> = (0..n * heads * hd).map(|i| val(i, 1)).collect();
        let k: Vec<f32> = (0..n * kv * hd).map(|i| val(i, 2)).collect();
        let v: Vec<f32> = (0..n * kv * hd).map(|i| val(i, 3)).collect();
        let exact = full_attention(&q, &k, &v, (heads, kv, hd), 0.2, false);
        let rounded = full_attention(&q, &k, &v, (heads, kv, hd), 0.2, true);
        let worst = exact.iter().zip(&rounded).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale = exact.iter().fold(0f32, |m, a| m.max(a.abs()));
        eprintln!("bf16 attention within {worst:.2e} of f32 (values up to {scale:.2})");
        assert!(worst <= 2e-2 * scale, "{worst}");
    }
}
