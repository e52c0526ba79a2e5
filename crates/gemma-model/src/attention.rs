//! Scaled dot-product attention over the KV cache. Keys and values are
//! converted to f32 once per call; each tile of queries materializes its
//! scores over the keys it may see (at most the window or the context),
//! normalizes them, then multiplies by the values, in llama.cpp's order.

use crate::cache::LayerCache;
use gemma_kernels::attn_gemm::{accumulate, round_to_f16, scores};
use gemma_kernels::geglu::exp_shifted;
use gemma_kernels::pool;
use gemma_kernels::softcap;
use std::cell::RefCell;

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
    /// Queries see only earlier keys (false: EmbeddingGemma's bidirectional
    /// attention, keys `|i − j| < window` of the whole chunk, which must
    /// then hold the whole sequence).
    pub causal: bool,
}

impl AttnShape {
    /// The first key position query `pos` sees.
    fn first(&self, pos: usize) -> usize {
        (pos + 1).saturating_sub(self.window)
    }

    /// The last key position query `pos` sees, of `end` stored.
    fn last(&self, pos: usize, end: usize) -> usize {
        if self.causal {
            pos
        } else {
            pos.saturating_add(self.window - 1).min(end - 1)
        }
    }
}

/// Attention of queries `q: [n, heads·hd]` at positions `start..start+n`
/// over `kv` (which already holds them), into `out: [n, heads·hd]`.
/// `spans`: position ranges `a..b` (within the chunk) whose queries also see
/// the later keys of their range (an image's soft tokens, attending both
/// ways; the window still bounds how far back a key may be).
/// `kf`/`vf` are reusable buffers for the converted keys and values, `slots`
/// the per-thread tile buffers (sized here, before the parallel loop, so the
/// tasks never allocate).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    s: AttnShape,
    q: &[f32],
    kv: &LayerCache,
    start: usize,
    spans: &[(usize, usize)],
    out: &mut [f32],
    kf: &mut Vec<f32>,
    vf: &mut Vec<f32>,
    slots: &mut Vec<TileBufs>,
) {
    let (hd, heads) = (s.head_dim, s.heads);
    let n = q.len() / (heads * hd);
    let tiles = n.div_ceil(QUERY_TILE);
    // Heads of one key/value head share its converted blocks; with few
    // query tiles (decoding) split them so every thread has work.
    let hg = if tiles * (heads / s.group) >= 2 * pool::global().threads() { s.group } else { 1 };
    let per_tile = heads / hg;
    // Keys and values every query may see, converted to f32 once:
    // `[kv_heads, npos, hd]` each, position `lo + p`.
    let kvh = heads / s.group;
    let lo = (start + 1).saturating_sub(s.window);
    let npos = start + n - lo;
    // Grown in steps of GROW_STEP positions so decoding does not reallocate per token.
    let room = kvh * npos.next_multiple_of(crate::cache::GROW_STEP) * hd;
    if kf.len() < kvh * npos * hd {
        kf.resize(room, 0.0);
        vf.resize(room, 0.0);
    }
    let (keys, vals) = (&mut kf[..kvh * npos * hd], &mut vf[..kvh * npos * hd]);
    let convert = |(i, (k, v)): (usize, (&mut [f32], &mut [f32]))| {
        let (h, p) = (i / npos, i % npos);
        kv.read_key(lo + p, h * hd, k);
        kv.read_value(lo + p, h * hd, v);
    };
    if kvh * npos >= 1024 {
        let (kp, vp) = (OutRows(keys.as_mut_ptr()), OutRows(vals.as_mut_ptr()));
        let rows = kvh * npos;
        pool::parallel_for(rows.div_ceil(256), &|task| {
            for i in task * 256..((task + 1) * 256).min(rows) {
                // SAFETY: row i of keys/vals ([rows, hd]) is converted by this task alone.
                let (k, v) = unsafe { (kp.row(i * hd, hd), vp.row(i * hd, hd)) };
                convert((i, (k, v)));
            }
        });
    } else {
        keys.chunks_mut(hd).zip(vals.chunks_mut(hd)).enumerate().for_each(convert);
    }
    let f16_math = kv.is_f16();
    let (keys, vals) = (&*keys, &*vals);
    let dst = OutRows(out.as_mut_ptr());
    let nq = QUERY_TILE.min(n) * hg;
    slots.resize_with(slots.len().max(pool::global().threads()), TileBufs::default);
    for b in slots.iter_mut() {
        b.reserve(nq, hd, npos.next_multiple_of(crate::cache::GROW_STEP));
    }
    let slot = SlotPtr(slots.as_mut_ptr(), slots.len());
    // One task per (query tile, head group), writing its own output rows.
    pool::parallel_for(tiles * per_tile, &|task| {
        let (tile, h0) = (task / per_tile, (task % per_tile) * hg);
        let t0 = tile * QUERY_TILE;
        let t1 = (t0 + QUERY_TILE).min(n);
        let h = h0 / s.group;
        let kvs = KvRange { keys: &keys[h * npos * hd..(h + 1) * npos * hd], vals: &vals[h * npos * hd..(h + 1) * npos * hd], lo, f16_math };
        // SAFETY: each thread of the loop has its own index, so its own slot.
        let b = unsafe { slot.get(pool::thread_index()) };
        attend_tile(&s, q, &kvs, start, start + n, spans, t0, t1, h0, hg, b);
        for (i, row) in b.acc.chunks_exact(hd).take((t1 - t0) * hg).enumerate() {
            let at = (t0 + i / hg) * heads * hd + (h0 + i % hg) * hd;
            // SAFETY: rows of (token, head) pairs are disjoint between
            // tasks and within `out` (n · heads · hd values).
            unsafe { dst.write(at, row) };
        }
    });
}

/// The per-thread tile buffers of one [`attention`] call.
#[derive(Clone, Copy)]
struct SlotPtr(*mut TileBufs, usize);
// SAFETY: slot i is used only by the loop thread with index i.
unsafe impl Send for SlotPtr {}
unsafe impl Sync for SlotPtr {}

impl SlotPtr {
    /// Slot `i`.
    /// SAFETY: only the thread with pool index `i` uses it during the loop.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, i: usize) -> &mut TileBufs {
        assert!(i < self.1, "thread index {i} beyond {} tile slots", self.1);
        unsafe { &mut *self.0.add(i) }
    }
}

/// The output of [`attention`], written by tasks at disjoint rows.
#[derive(Clone, Copy)]
struct OutRows(*mut f32);
// SAFETY: each (token, head) row is written by exactly one task.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

impl OutRows {
    /// Copy `row` to elements `at..at + row.len()`.
    /// SAFETY: in bounds, and no other task writes these elements.
    unsafe fn write(&self, at: usize, row: &[f32]) {
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), self.0.add(at), row.len()) };
    }

    /// Elements `at..at + len` as a mutable slice.
    /// SAFETY: in bounds, and no other task uses these elements meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, at: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// Per-thread buffers of [`attend_tile`].
#[derive(Debug, Default, Clone)]
pub struct TileBufs {
    qs: Vec<f32>,
    acc: Vec<f32>,
    sc: Vec<f32>,
}

impl TileBufs {
    /// Room for `nq` queries of `hd` values and their scores over `keys`
    /// keys. Every buffer gets 32 spare values at its end: the slots are
    /// allocated one after another by the calling thread, and without the
    /// gap neighbouring threads' buffers could share cache lines (false
    /// sharing once cost ~20% of prefill).
    fn reserve(&mut self, nq: usize, hd: usize, keys: usize) {
        for (v, n) in [(&mut self.qs, nq * hd), (&mut self.acc, nq * hd), (&mut self.sc, nq * keys)] {
            v.reserve((n + 32).saturating_sub(v.len()));
        }
    }
}

/// Attention of one new token in each of several sequences (`seqs[i]` = its
/// layer cache and the token's position), `q: [seqs, heads·hd]` into `out`
/// (same shape): one task per sequence and key/value head. Each query's
/// arithmetic is the same as in [`attention`] alone (batch-invariant).
pub fn decode_attention(s: AttnShape, q: &[f32], seqs: &[(&LayerCache, usize)], out: &mut [f32]) {
    let (hd, heads) = (s.head_dim, s.heads);
    let kvh = heads / s.group;
    let dst = OutRows(out.as_mut_ptr());
    pool::parallel_for(seqs.len() * kvh, &|task| {
        let (i, h) = (task / kvh, task % kvh);
        let (kv, pos) = seqs[i];
        let lo = (pos + 1).saturating_sub(s.window);
        let npos = pos + 1 - lo;
        DECODE.with(|d| {
            let (keys, vals, b) = &mut *d.borrow_mut();
            keys.resize(npos * hd, 0.0);
            vals.resize(npos * hd, 0.0);
            for p in 0..npos {
                kv.read_key(lo + p, h * hd, &mut keys[p * hd..(p + 1) * hd]);
                kv.read_value(lo + p, h * hd, &mut vals[p * hd..(p + 1) * hd]);
            }
            let kvs = KvRange { keys: &keys[..npos * hd], vals: &vals[..npos * hd], lo, f16_math: kv.is_f16() };
            let qi = &q[i * heads * hd..(i + 1) * heads * hd];
            attend_tile(&s, qi, &kvs, pos, pos + 1, &[], 0, 1, h * s.group, s.group, b);
            // SAFETY: the rows of (sequence i, heads of KV head h) belong to this task alone.
            unsafe { dst.write(i * heads * hd + h * s.group * hd, &b.acc[..s.group * hd]) };
        });
    });
}

thread_local! {
    /// Converted keys, values and tile buffers of [`decode_attention`].
    static DECODE: RefCell<(Vec<f32>, Vec<f32>, TileBufs)> = RefCell::new(Default::default());
}

/// One key/value head's converted keys and values from position `lo` on.
struct KvRange<'a> {
    keys: &'a [f32],
    vals: &'a [f32],
    lo: usize,
    /// Whether the cache is f16 (then queries and probabilities are rounded too).
    f16_math: bool,
}

/// Queries of tokens `t0..t1` and heads `h0..h0+nh` (one key/value head);
/// leaves `[t1 − t0, nh, hd]` in `b.acc`.
///
/// The scores of every visible key are materialized (`[nq, keys]`, at most
/// the window or context per query), normalized, then multiplied by the
/// values — the order llama.cpp uses, so that with an f16 cache the
/// probabilities are rounded to f16 *after* normalization exactly as there.
#[allow(clippy::too_many_arguments)]
fn attend_tile(s: &AttnShape, q: &[f32], kv: &KvRange, start: usize, end: usize, spans: &[(usize, usize)], t0: usize, t1: usize, h0: usize, nh: usize, b: &mut TileBufs) {
    let (hd, stride) = (s.head_dim, s.heads * s.head_dim);
    let nq = (t1 - t0) * nh;
    let first = |pos: usize| s.first(pos);
    // A query in a span also sees the rest of it (never decreasing in pos:
    // after a span, pos is past its end).
    let last = |pos: usize| match spans.iter().find(|&&(a, b)| a <= pos && pos < b) {
        Some(&(_, b)) => s.last(pos, end).max(b - 1).min(end - 1),
        None => s.last(pos, end),
    };
    // With an f16 cache the products are taken as llama.cpp takes them: the
    // query is scaled, then rounded to f16, and so are the probabilities.
    let f16_math = kv.f16_math;
    let TileBufs { qs, acc, sc, .. } = b;
    qs.clear();
    for t in t0..t1 {
        qs.extend_from_slice(&q[t * stride + h0 * hd..][..nh * hd]);
    }
    if f16_math {
        qs.iter_mut().for_each(|v| *v *= s.scale);
        round_to_f16(qs);
    }
    let (lo, hi) = (first(start + t0), last(start + t1 - 1));
    let nk = hi + 1 - lo;
    let (keys, vals) = (&kv.keys[(lo - kv.lo) * hd..(hi + 1 - kv.lo) * hd], &kv.vals[(lo - kv.lo) * hd..(hi + 1 - kv.lo) * hd]);
    if sc.len() < nq * nk {
        sc.resize(nq * nk, 0.0);
    }
    let sc = &mut sc[..nq * nk];
    scores(qs, keys, hd, sc); // [nq, nk]
    for (i, row) in sc.chunks_exact_mut(nk).enumerate() {
        let pos = start + t0 + i / nh;
        // Keys this query may see: k0..k1 (relative to lo); the rest get 0.
        let (k0, k1) = (first(pos) - lo, last(pos) + 1 - lo);
        if !f16_math {
            row[k0..k1].iter_mut().for_each(|v| *v *= s.scale);
        }
        if let Some(cap) = s.softcap {
            softcap(&mut row[k0..k1], cap);
        }
        let max = row[k0..k1].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum = exp_shifted(&mut row[k0..k1], max);
        // 1/Σ in f64, applied in f32, as ggml's softmax.
        let inv = if sum > 0.0 { (1.0 / sum) as f32 } else { 0.0 };
        row[k0..k1].iter_mut().for_each(|v| *v *= inv);
        row[..k0].fill(0.0);
        row[k1..].fill(0.0);
    }
    if f16_math {
        round_to_f16(sc);
    }
    acc.clear();
    acc.resize(nq * hd, 0.0);
    accumulate(sc, vals, hd, acc);
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
            "sliding_window": 100}))
        .unwrap();
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
                let s = AttnShape { heads, group: 2, head_dim: hd, window, scale: 0.3, softcap, causal: true };
                let (mut got, mut want) = (vec![0f32; n * heads * hd], vec![0f32; n * heads * hd]);
                attention(s, &q, &cache.layers[0], start, &[], &mut got, &mut Vec::new(), &mut Vec::new(), &mut Vec::new());
                naive(&s, &q, &round(&k), &round(&v), start, &mut want);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = if half { 2e-3 } else { 2e-5 }; // f16 query and probabilities
                    assert!((g - w).abs() < tol, "half={half} window={window} at {i}: {g} vs {w}");
                }
            }
        }
    }
}
