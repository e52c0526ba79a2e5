//! The forward's Gemma 4 steps (called from the block in `forward/mod.rs`):
//! the gain-free value norm, the per-layer inputs and each layer's delta
//! from them, and the mixture-of-experts block beside the dense MLP.

use crate::forward::{Model, Seg};
use crate::weights::{MoeWeights, PleLayerWeights};
use crate::workspace::{buf, Workspace};
use crate::KvCache;
use gemma_kernels::geglu::geglu;
use gemma_kernels::ops::rms_norm_in_place;

/// RMSNorm without a gain over each `hd`-wide head of `v` (Gemma 4's value norm).
pub(crate) fn scale_free_norm(v: &mut [f32], hd: usize, eps: f32) {
    ONES.with(|o| {
        let mut o = o.borrow_mut();
        if o.len() < hd {
            o.resize(hd, 1.0);
        }
        rms_norm_in_place(v, &o[..hd], eps);
    });
}

thread_local! {
    /// A row of ones (the gain of a scale-free norm).
    static ONES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The per-layer inputs of every row, `[n, layers · P]` into `sc.ple`, from
/// the scaled embeddings in `sc.x` (an image's soft tokens where it has
/// them): `(norm(proj(e) / √hidden) + table[tok] · √P) / √2`, `tok` the pad
/// id for soft tokens.
pub(crate) fn per_layer_inputs(m: &Model, segs: &[Seg], items: &[(&[u32], &mut KvCache)], sc: &mut Workspace) {
    let cfg = &m.config;
    let Some(w) = &m.weights.ple else { return };
    let (hidden, p) = (cfg.hidden_size, cfg.per_layer_input_size);
    let lp = cfg.num_layers() * p;
    let n: usize = segs.iter().map(|s| s.n).sum();
    let out = buf(&mut sc.ple, n * lp);
    Model::project_plain(segs, &sc.x[..n * hidden], &w.proj, out);
    let inv_h = (hidden as f32).powf(-0.5);
    out.iter_mut().for_each(|v| *v *= inv_h);
    rms_norm_in_place(out, &w.norm, cfg.rms_norm_eps);
    let scale_p = cfg.dtype.unwrap_or(gemma_core::DType::F32).round((p as f32).sqrt());
    let inv_sqrt2 = std::f32::consts::FRAC_1_SQRT_2;
    SCRATCH.with(|m| {
        let mut m = m.borrow_mut();
        let row = buf(&mut m.table_row, lp);
        for seg in segs {
            for (t, &tok) in super::seg_tokens(seg, items).iter().enumerate() {
                // Ids past the per-layer table (Gemma 3n's is shorter than the vocabulary) read row 0.
                let mut tok = if (tok as usize) < w.embed.rows { tok as usize } else { 0 };
                // An image's soft tokens read the pad id's row, as
                // transformers replaces their ids.
                let pos = seg.start + t;
                if seg.media.iter().any(|m| m.at <= pos && pos < m.at + m.rows.len() / hidden) {
                    tok = (cfg.pad_token_id as usize).min(w.embed.rows.saturating_sub(1));
                }
                gemma_quant::read_f32(&w.embed.storage, tok * lp, row);
                let dst = &mut out[(seg.row0 + t) * lp..(seg.row0 + t + 1) * lp];
                dst.iter_mut().zip(row.iter()).for_each(|(d, &e)| *d = (*d + e * scale_p) * inv_sqrt2);
            }
        }
    });
}

/// Buffers of the per-layer inputs and the MoE block, kept from call to
/// call on the calling thread: decoding allocates nothing once warm.
#[derive(Default)]
struct Scratch {
    table_row: Vec<f32>,
    xr: Vec<f32>,
    logits: Vec<f32>,
    p: Vec<f32>,
    order: Vec<usize>,
    /// (row, weight) per expert.
    routed: Vec<Vec<(usize, f32)>>,
    xin: Vec<f32>,
    picked: Vec<(usize, f32)>,
    xs: Vec<f32>,
    gu: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    y: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Layer `l`'s per-layer input `norm(proj(gelu(gate·x) ⊙ e_l))` `[n, hidden]`,
/// returned in `y` (Gemma 4 adds it to the residual, Gemma 3n to its
/// AltUp streams past the first). `tape` records what its backward needs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn per_layer_delta<'y>(
    w: &PleLayerWeights,
    l: usize,
    layers: usize,
    segs: &[Seg],
    x: &[f32],
    ple: &[f32],
    p: usize,
    eps: f32,
    g: &mut Vec<f32>,
    y: &'y mut Vec<f32>,
    mut tape: Option<&mut crate::tape::LayerTape>,
) -> &'y mut [f32] {
    let n: usize = segs.iter().map(|s| s.n).sum();
    let hidden = x.len() / n;
    // `ple` is the workspace buffer: it may be longer than this call's rows.
    let lp = layers * p;
    let gate = buf(g, 2 * n * p);
    let (gate, e) = gate.split_at_mut(n * p);
    Model::project_plain(segs, x, &w.gate, gate);
    for t in 0..n {
        e[t * p..(t + 1) * p].copy_from_slice(&ple[t * lp + l * p..t * lp + (l + 1) * p]);
    }
    if let Some(t) = tape.as_deref_mut() {
        crate::tape::record(&mut t.ple_gate, gate);
        crate::tape::record(&mut t.ple_e, e);
    }
    geglu(gate, e);
    let y = buf(y, n * hidden);
    Model::project_plain(segs, gate, &w.proj, y);
    if let Some(t) = tape {
        crate::tape::record(&mut t.ple_z, y);
    }
    rms_norm_in_place(y, &w.norm, eps);
    y
}

/// The MoE block: `dense` (the dense MLP's output, in place) becomes
/// `norm₁(dense) + norm₂(experts(norm(r)))`, the experts chosen per token
/// from the residual `r` by the router (softmax over all experts in f32,
/// top-k renormalized, times each expert's scale). Each expert runs over the
/// rows routed to it, decode rows together and each prefill segment apart,
/// as the dense projections do, so a sequence's result does not depend on
/// the others in the batch.
/// `tape` records the routes and the experts' sum for the backward.
pub(crate) fn moe_block(w: &MoeWeights, segs: &[Seg], r: &[f32], dense: &mut [f32], eps: f32, scratch: &mut Vec<f32>, tape: Option<&mut crate::tape::LayerTape>) {
    SCRATCH.with(|m| moe_block_in(w, segs, r, dense, eps, scratch, &mut m.borrow_mut(), tape));
}

#[allow(clippy::too_many_arguments)]
fn moe_block_in(w: &MoeWeights, segs: &[Seg], r: &[f32], dense: &mut [f32], eps: f32, scratch: &mut Vec<f32>, m: &mut Scratch, mut tape: Option<&mut crate::tape::LayerTape>) {
    let n: usize = segs.iter().map(|s| s.n).sum();
    let hidden = r.len() / n;
    let experts = w.gate_up.len();
    let ff = w.down.first().map_or(0, |d| d.cols);
    rms_norm_in_place(dense, &w.post_norm_dense, eps);
    // Router: scale-free norm of the residual, times scale / √hidden.
    m.xr.clear();
    m.xr.extend_from_slice(r);
    scale_free_norm(&mut m.xr, hidden, eps);
    let k = (hidden as f32).powf(-0.5);
    for row in m.xr.chunks_exact_mut(hidden) {
        row.iter_mut().zip(&w.router_scale).for_each(|(v, s)| *v *= s * k);
    }
    let logits = buf(&mut m.logits, n * experts);
    Model::project_plain(segs, &m.xr, &w.router, logits);
    m.routed.resize_with(experts, Vec::new);
    m.routed.iter_mut().for_each(Vec::clear);
    if let Some(tp) = tape.as_deref_mut() {
        tp.moe_routes.clear();
    }
    for (t, lg) in logits.chunks_exact(experts).enumerate() {
        let max = lg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        m.p.clear();
        m.p.extend(lg.iter().map(|&v| (v - max).exp()));
        let p = &m.p;
        let z: f32 = p.iter().sum();
        m.order.clear();
        m.order.extend(0..experts);
        // Highest probability first; ties to the lower index.
        m.order.sort_unstable_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let top = &m.order[..w.top_k];
        let sum: f32 = top.iter().map(|&e| p[e] / z).sum();
        for &e in top {
            m.routed[e].push((t, p[e] / z / sum * w.expert_scale[e]));
            if let Some(tp) = tape.as_deref_mut() {
                tp.moe_routes.push((t, e, p[e] / z / sum));
            }
        }
    }
    // Experts' input.
    m.xin.clear();
    m.xin.extend_from_slice(r);
    rms_norm_in_place(&mut m.xin, &w.pre_norm, eps);
    let out = buf(scratch, n * hidden);
    out.fill(0.0);
    // Sub-segments (on the stack for up to 16 segments: no allocation).
    let mut stack = [segs[0]; 16];
    let mut heap = Vec::new();
    let sub_all: &mut [Seg] = if segs.len() <= stack.len() {
        &mut stack
    } else {
        heap.resize(segs.len(), segs[0]);
        &mut heap
    };
    for (e, rows) in m.routed.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        // Sub-segments over the routed rows: decode rows first, then each
        // prefill segment's rows, in row order.
        let mut nsub = 0;
        m.picked.clear();
        for decode in [true, false] {
            for s in segs.iter().filter(|s| s.decode == decode) {
                let start = m.picked.len();
                m.picked.extend(rows.iter().copied().filter(|(t, _)| (s.row0..s.row0 + s.n).contains(t)));
                if m.picked.len() > start {
                    sub_all[nsub] = Seg { row0: start, n: m.picked.len() - start, ..*s };
                    nsub += 1;
                }
            }
        }
        let sub = &sub_all[..nsub];
        let rows_in = m.picked.len();
        m.xs.clear();
        for &(t, _) in &m.picked {
            m.xs.extend_from_slice(&m.xin[t * hidden..(t + 1) * hidden]);
        }
        let gu = buf(&mut m.gu, rows_in * 2 * ff);
        Model::project_plain(sub, &m.xs, &w.gate_up[e], gu);
        m.g.clear();
        m.u.clear();
        for row in gu.chunks_exact(2 * ff) {
            m.g.extend_from_slice(&row[..ff]);
            m.u.extend_from_slice(&row[ff..]);
        }
        geglu(&mut m.g, &m.u);
        let y = buf(&mut m.y, rows_in * hidden);
        Model::project_plain(sub, &m.g, &w.down[e], y);
        for (i, &(t, wt)) in m.picked.iter().enumerate() {
            out[t * hidden..(t + 1) * hidden].iter_mut().zip(&y[i * hidden..(i + 1) * hidden]).for_each(|(o, v)| *o += v * wt);
        }
    }
    if let Some(tp) = tape {
        crate::tape::record(&mut tp.moe_raw, out);
    }
    rms_norm_in_place(out, &w.post_norm_experts, eps);
    dense.iter_mut().zip(out.iter()).for_each(|(d, o)| *d += o);
}
