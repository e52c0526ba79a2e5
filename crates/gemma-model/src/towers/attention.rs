//! Full (bidirectional) multi-head attention over an image's patches, as
//! the vision encoders compute it: `softmax(scale · q·kᵀ)·v` per head, one
//! task per (head, block of queries) on all threads.

use gemma_kernels::gemm_nn::gemm_nn;
use gemma_kernels::pool;

/// Queries per task (the scores stay small at 4096 patches).
const QUERIES: usize = 128;

/// `q: [n, heads·hd]`, `k, v: [n, kv_heads·hd]` (query head `i` reads
/// key/value head `i / (heads / kv_heads)`); returns `[n, heads·hd]`.
pub fn full_attention(q: &[f32], k: &[f32], v: &[f32], heads: usize, kv_heads: usize, hd: usize, scale: f32) -> Vec<f32> {
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
