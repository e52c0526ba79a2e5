//! Scaled dot-product attention over the KV cache, streamed: keys and values
//! are read in blocks of [`KEY_BLOCK`] positions (converted to f32 once per
//! block for a tile of queries) and folded in with an online softmax, so no
//! full score matrix is ever materialized, however long the context.

use crate::cache::LayerCache;
use gemma_kernels::attn_gemm::{accumulate, round_to_f16, scores};
use gemma_kernels::geglu::exp_shifted;
use gemma_kernels::softcap;
use rayon::prelude::*;

/// Key/value positions converted and processed together.
const KEY_BLOCK: usize = 32;
/// Query tokens sharing one converted key/value block (per head).
const QUERY_TILE: usize = 16;

/// Shape and masking of one layer's attention.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Query heads.
    pub heads: usize,
    /// Query heads per key/value head.
    pub group: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Keys a query sees: positions `pos − window < j ≤ pos` (usize::MAX: all).
    pub window: usize,
    /// Score scale (`query_pre_attn_scalar^-½`).
    pub scale: f32,
    /// Gemma 2 attention-logit soft-cap.
    pub softcap: Option<f32>,
}

/// Attention of queries `q: [n, heads·hd]` at positions `start..start+n`
/// over `kv` (which already holds them), into `out: [n, heads·hd]`.
pub fn attention(s: AttnShape, q: &[f32], kv: &LayerCache, start: usize, out: &mut [f32]) {
    let (hd, heads) = (s.head_dim, s.heads);
    let n = q.len() / (heads * hd);
    let tiles = n.div_ceil(QUERY_TILE);
    // Heads of one key/value head share its converted blocks; with few
    // query tiles (decoding) split them so every thread has work.
    let hg = if tiles * (heads / s.group) >= 2 * rayon::current_num_threads() { s.group } else { 1 };
    let per_tile = heads / hg;
    // One task per (query tile, head group); each returns its [tile, hg, hd] output.
    let results: Vec<(usize, usize, Vec<f32>)> = (0..tiles * per_tile)
        .into_par_iter()
        .map(|task| {
            let (tile, h0) = (task / per_tile, (task % per_tile) * hg);
            let t0 = tile * QUERY_TILE;
            let t1 = (t0 + QUERY_TILE).min(n);
            (t0, h0, attend_tile(&s, q, kv, start, t0, t1, h0, hg))
        })
        .collect();
    for (t0, h0, o) in results {
        for (i, row) in o.chunks_exact(hd).enumerate() {
            let at = (t0 + i / hg) * heads * hd + (h0 + i % hg) * hd;
            out[at..at + hd].copy_from_slice(row);
        }
    }
}

/// Queries of tokens `t0..t1` and heads `h0..h0+nh` (one key/value head);
/// returns `[t1 − t0, nh, hd]`.
#[allow(clippy::too_many_arguments)]
fn attend_tile(s: &AttnShape, q: &[f32], kv: &LayerCache, start: usize, t0: usize, t1: usize, h0: usize, nh: usize) -> Vec<f32> {
    let (hd, stride) = (s.head_dim, s.heads * s.head_dim);
    let kv_off = (h0 / s.group) * hd;
    let nq = (t1 - t0) * nh;
    let first = |pos: usize| (pos + 1).saturating_sub(s.window);
    // With an f16 cache the products are taken as llama.cpp takes them: the
    // query and the probabilities are rounded to f16 too.
    let f16_math = kv.is_f16();
    let mut qs: Vec<f32> = (t0..t1).flat_map(|t| q[t * stride + h0 * hd..][..nh * hd].iter().copied()).collect();
    if f16_math {
        round_to_f16(&mut qs);
    }
    let mut acc = vec![0f32; nq * hd];
    let mut max = vec![f32::NEG_INFINITY; nq];
    let mut sum = vec![0f32; nq];
    let (mut keys, mut vals) = (vec![0f32; KEY_BLOCK * hd], vec![0f32; KEY_BLOCK * hd]);
    let (lo, hi) = (first(start + t0), start + t1 - 1);
    let mut sc = vec![0f32; nq * KEY_BLOCK];
    let mut b0 = lo;
    while b0 <= hi {
        let b1 = (b0 + KEY_BLOCK).min(hi + 1); // keys b0..b1
        let nk = b1 - b0;
        for j in b0..b1 {
            let r = (j - b0) * hd;
            kv.read_key(j, kv_off, &mut keys[r..r + hd]);
            kv.read_value(j, kv_off, &mut vals[r..r + hd]);
        }
        let sc = &mut sc[..nq * nk];
        scores(&qs, &keys[..nk * hd], hd, sc);
        for (i, row) in sc.chunks_exact_mut(nk).enumerate() {
            let pos = start + t0 + i / nh;
            // Keys this query may not see get probability 0.
            let (k0, k1) = (first(pos).max(b0), (pos + 1).min(b1));
            if k0 >= k1 {
                row.fill(0.0);
                continue;
            }
            row.iter_mut().for_each(|v| *v *= s.scale);
            if let Some(cap) = s.softcap {
                softcap(row, cap);
            }
            for (j, v) in row.iter_mut().enumerate() {
                if !(k0..k1).contains(&(b0 + j)) {
                    *v = f32::NEG_INFINITY;
                }
            }
            let bmax = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if bmax > max[i] {
                // Rescale what was accumulated under the old maximum.
                let corr = (max[i] - bmax).exp();
                acc[i * hd..(i + 1) * hd].iter_mut().for_each(|v| *v *= corr);
                sum[i] *= corr;
                max[i] = bmax;
            }
            sum[i] += exp_shifted(row, max[i]);
        }
        if f16_math {
            round_to_f16(sc);
        }
        accumulate(sc, &vals[..nk * hd], hd, &mut acc);
        b0 = b1;
    }
    for (ai, &l) in acc.chunks_exact_mut(hd).zip(&sum) {
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        ai.iter_mut().for_each(|v| *v *= inv);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KvCache;
    use crate::config::GemmaConfig;
    use serde_json::json;

    /// Materialized softmax(q·kᵀ) v, the definition.
    fn naive(s: &AttnShape, q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], start: usize, out: &mut [f32]) {
        let (hd, heads) = (s.head_dim, s.heads);
        for (t, qt) in q.chunks_exact(heads * hd).enumerate() {
            let pos = start + t;
            for h in 0..heads {
                let qh = &qt[h * hd..(h + 1) * hd];
                let off = (h / s.group) * hd;
                let keys: Vec<usize> = ((pos + 1).saturating_sub(s.window)..=pos).collect();
                let mut sc: Vec<f32> = keys.iter().map(|&j| qh.iter().zip(&k[j][off..off + hd]).map(|(a, b)| a * b).sum::<f32>() * s.scale).collect();
                if let Some(cap) = s.softcap {
                    sc.iter_mut().for_each(|x| *x = cap * (*x / cap).tanh());
                }
                let m = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let z: f32 = sc.iter().map(|x| (x - m).exp()).sum();
                let o = &mut out[t * heads * hd + h * hd..][..hd];
                o.fill(0.0);
                for (p, &j) in sc.iter().zip(&keys) {
                    for (a, b) in o.iter_mut().zip(&v[j][off..off + hd]) {
                        *a += (p - m).exp() / z * b;
                    }
                }
            }
        }
    }

    /// Long prompts (several key blocks and query tiles), sliding and global
    /// windows, soft-capping, f32 and f16 caches, a prefix already cached.
    #[test]
    fn streamed_attention_equals_the_definition() {
        let cfg = GemmaConfig::from_json(&json!({"architectures": ["Gemma2ForCausalLM"], "vocab_size": 10, "hidden_size": 64,
            "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "sliding_window": 100})).unwrap();
        let (heads, hd, kvd) = (4, 32, 64);
        let (start, n) = (37, 150);
        let val = |i: usize, salt: usize| (((i * 7919 + salt * 104729) % 2001) as f32 / 1000.0 - 1.0) * 0.7;
        let k: Vec<Vec<f32>> = (0..start + n).map(|p| (0..kvd).map(|c| val(p * kvd + c, 1)).collect()).collect();
        let v: Vec<Vec<f32>> = (0..start + n).map(|p| (0..kvd).map(|c| val(p * kvd + c, 2)).collect()).collect();
        let q: Vec<f32> = (0..n * heads * hd).map(|i| val(i, 3) * 2.0).collect();
        for half in [false, true] {
            let mut cache = KvCache::new(&cfg, half);
            for p in 0..start + n {
                cache.layers[0].store(p, &k[p], &v[p]);
            }
            let round = |x: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
                x.iter().map(|r| r.iter().map(|&a| if half { half::f16::from_f32(a).to_f32() } else { a }).collect()).collect()
            };
            for (window, softcap) in [(usize::MAX, None), (100, Some(5.0)), (20, None)] {
                let s = AttnShape { heads, group: 2, head_dim: hd, window, scale: 0.3, softcap };
                let (mut got, mut want) = (vec![0f32; n * heads * hd], vec![0f32; n * heads * hd]);
                attention(s, &q, &cache.layers[0], start, &mut got);
                naive(&s, &q, &round(&k), &round(&v), start, &mut want);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = if half { 2e-3 } else { 2e-5 }; // f16 query and probabilities
                    assert!((g - w).abs() < tol, "half={half} window={window} at {i}: {g} vs {w}");
                }
            }
        }
    }
}
