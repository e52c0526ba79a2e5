//! Loss and LoRA gradients of one micro-batch: the model's training forward
//! ([`Model::forward_train`], which records a [`Tape`]), the fused head +
//! cross-entropy over the labeled rows, then each block's steps backwards
//! (post-norms, projections through the frozen base, GeGLU, attention,
//! RoPE, qk-norm, pre-norms, residuals, and each generation's own steps:
//! Gemma 4's per-layer inputs, value norm, KV sharing and experts; Gemma
//! 3n's AltUp streams, LAuReL and sparse gate).

use crate::adapter::TrainableLora;
use crate::ops::attention::attention_backward_segments;
use crate::ops::cross_entropy::head_cross_entropy;
use crate::ops::geglu::geglu_backward_f32;
use crate::ops::linear::{linear_backward, LoraParam};
use crate::ops::altup::{collapse_backward_f32, correct_backward, laurel_backward, predict, predict_backward, sparse_gate, sparse_gate_backward, AltUpRef};
use crate::ops::moe::moe_backward;
use crate::ops::norm::rms_norm_backward;
use crate::ops::ple::{ple_backward, ple_input_grad};
use crate::ops::rope::rope_backward;
use gemma_model::tensors::Proj;
use crate::{Result, TrainError};
use gemma_kernels::ops::rope_angles;
use gemma_kernels::rms_norm;
use gemma_model::lora::dropout_seed;
use gemma_model::{Model, Tape};

/// One training sequence: token ids and which of them are targets (a
/// target at `i` is predicted from position `i − 1`; position 0 never is).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids (BOS first).
    pub ids: Vec<u32>,
    /// `true` where the token is learned.
    pub targets: Vec<bool>,
}

impl Example {
    /// Number of learned tokens.
    pub fn count(&self) -> usize {
        self.targets.iter().skip(1).filter(|&&t| t).count()
    }
}

/// What [`loss_and_grad`] measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct MicroBatch {
    /// Σ of the cross-entropy of every target token (unweighted).
    pub loss_sum: f64,
    /// Number of target tokens.
    pub targets: usize,
    /// Tokens run through the model.
    pub tokens: usize,
}

/// Forward and backward over `batch`: adds `weight ·` (gradient of the
/// summed loss) to the adapter's gradients. The model is not changed: `lora`
/// rides on the sequences ([`Model::forward_train`]); `seed` is this
/// micro-batch's dropout seed. With `grad: false` only the loss is computed.
pub fn loss_and_grad(model: &Model, lora: &mut TrainableLora, batch: &[Example], weight: f32, seed: u64, tape: &mut Tape, grad: bool) -> Result<MicroBatch> {
    let cfg = &model.config;
    let hidden = cfg.hidden_size;
    let seqs: Vec<&[u32]> = batch.iter().map(|e| &e.ids[..]).collect();
    tape.dropout = if grad { lora.spec.dropout } else { 0.0 };
    tape.seed = seed;
    let timer = Timer::new();
    let adapter = lora.to_adapter();
    model.forward_train(&seqs, tape, Some(&adapter))?;
    timer.lap("forward");
    let n: usize = seqs.iter().map(|s| s.len()).sum();
    // Labeled rows: row of position i predicts ids[i + 1].
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (e, &(row0, len)) in batch.iter().zip(&tape.seqs) {
        for i in 0..len - 1 {
            if e.targets[i + 1] {
                rows.push(row0 + i);
                targets.push(e.ids[i + 1]);
            }
        }
    }
    let m = rows.len();
    let mut out = MicroBatch { loss_sum: 0.0, targets: m, tokens: n };
    if m == 0 {
        return Ok(out);
    }
    let mut xs = vec![0f32; m * hidden];
    for (k, &r) in rows.iter().enumerate() {
        xs[k * hidden..(k + 1) * hidden].copy_from_slice(&tape.x_out[r * hidden..(r + 1) * hidden]);
    }
    let mut hn = vec![0f32; m * hidden];
    rms_norm(&xs, &model.weights.final_norm, cfg.rms_norm_eps, &mut hn);
    let mut dhn = vec![0f32; m * hidden];
    let (_, losses) = head_cross_entropy(&hn, &targets, weight, model.weights.head(), cfg.final_softcap, &mut dhn);
    timer.lap("head + cross-entropy");
    out.loss_sum = losses.iter().sum();
    if !out.loss_sum.is_finite() {
        return Err(TrainError::Invalid(format!("the loss is {} (not finite)", out.loss_sum)));
    }
    if !grad {
        return Ok(out);
    }
    let eps = cfg.rms_norm_eps as f64;
    let mut dxs = vec![0f32; m * hidden];
    rms_norm_backward(&xs, &model.weights.final_norm, eps, &dhn, &mut dxs);
    let mut dx = vec![0f32; n * hidden];
    for (k, &r) in rows.iter().enumerate() {
        dx[r * hidden..(r + 1) * hidden].copy_from_slice(&dxs[k * hidden..(k + 1) * hidden]);
    }
    let drop = lora.spec.dropout;
    // Gradients of the keys and values a KV-sharing layer read from an
    // earlier layer's cache, waiting for that layer's backward.
    let mut shared_kv: Vec<Option<(Vec<f32>, Vec<f32>)>> = vec![None; cfg.num_layers()];
    // Gemma 3n: the gradient of all AltUp streams `[S, n, hidden]`, from the collapse.
    let mut streams = match &model.weights.altup {
        Some(a) => Some(collapse_backward_f32(&a.unembed, &tape.streams_out, hidden, &dx)),
        None => None,
    };
    for l in (0..cfg.num_layers()).rev() {
        let dr = |p: Proj| (drop > 0.0).then(|| (drop, dropout_seed(seed, l, p.index())));
        if tape.checkpointing {
            model.recompute_layer(l, &seqs, tape, Some(&adapter))?;
        }
        match streams.as_mut() {
            Some(ds) => altup_layer_backward(model, l, tape, &mut lora.layers[l], &dr, &mut shared_kv, ds),
            None => block_backward(model, l, tape, &mut lora.layers[l], &dr, &mut shared_kv, &mut dx),
        }
        if tape.checkpointing {
            tape.layers[l].release();
        }
    }
    timer.lap("blocks backward");
    Ok(out)
}

/// Phase times on stderr when `GEMMA_TRAIN_PROFILE` is set.
struct Timer(Option<std::cell::Cell<std::time::Instant>>);

impl Timer {
    fn new() -> Self {
        Self(std::env::var_os("GEMMA_TRAIN_PROFILE").map(|_| std::cell::Cell::new(std::time::Instant::now())))
    }

    fn lap(&self, what: &str) {
        if let Some(t) = &self.0 {
            eprintln!("[profile] {what}: {:.3}s", t.get().elapsed().as_secs_f64());
            t.set(std::time::Instant::now());
        }
    }
}

/// `a += b`.
fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// The gradient through block `l`: `dx` holds the gradient of the block's
/// output on entry and of its input on return. The block's steps backwards:
/// the layer scale and the per-layer input (Gemma 4), the feed-forward, then
/// attention (keys and values from `shared_kv` added for the layers others
/// read them from; a KV-sharing layer leaves its key/value gradients there).
fn block_backward(
    model: &Model,
    l: usize,
    tape: &Tape,
    lora: &mut [Option<LoraParam>; 7],
    dr: &dyn Fn(Proj) -> Option<(f32, u64)>,
    shared_kv: &mut [Option<(Vec<f32>, Vec<f32>)>],
    dx: &mut [f32],
) {
    let cfg = &model.config;
    let spec = &cfg.layers[l];
    let w = &model.weights.layers[l];
    let t = &tape.layers[l];
    let seqs = &tape.seqs[..];
    let (hidden, hd, qd, kvd, ff) = (cfg.hidden_size, spec.head_dim, cfg.layer_q_dim(l), cfg.layer_kv_dim(l), spec.intermediate_size);
    let n = dx.len() / hidden;
    let eps = cfg.rms_norm_eps as f64;
    let [lq, lk, lv, lo, lg, lu, ld] = lora;

    // Gemma 4: x_out = s · (x + ple(x)).
    if let Some(s) = w.layer_scalar {
        dx.iter_mut().for_each(|v| *v *= s);
    }
    // (Gemma 3n's per-layer input feeds the AltUp streams: altup_layer_backward.)
    if let (Some(ple), None) = (&w.ple, &w.altup) {
        ple_backward(ple, t, eps, dx);
    }

    // Feed-forward: x_out = x_mid + post(down(gelu(gate(h2)) · up(h2))),
    // with Gemma 4's experts beside the dense MLP: post(moe(x_mid, down(…))).
    let mut d_down = vec![0f32; n * hidden];
    let post_in = if w.moe.is_some() { &t.moe_sum } else { &t.down_out };
    match &w.post_ffn_norm {
        Some(g) => rms_norm_backward(post_in, g, eps, dx, &mut d_down),
        None => d_down.copy_from_slice(dx),
    }
    let mut d_moe_r = None;
    if let Some(moe) = &w.moe {
        let mut dr = vec![0f32; n * hidden];
        d_down = moe_backward(moe, t, eps, &d_down, &mut dr);
        d_moe_r = Some(dr);
    }
    let mut d_act = vec![0f32; n * ff];
    linear_backward(&w.down, ld.as_mut(), dr(Proj::Down), &t.act, n, &d_down, &mut d_act);
    let (mut d_gate, mut d_up) = (vec![0f32; n * ff], vec![0f32; n * ff]);
    match spec.gate_sparsity_k {
        // Gemma 3n: GELU of the sparse gate `relu(g − (mean + k·std))`.
        Some(k) => {
            let sparse = sparse_gate(&t.gate_pre, ff, k as f64);
            geglu_backward_f32(&sparse, &t.up, &d_act, &mut d_gate, &mut d_up);
            d_gate = sparse_gate_backward(&t.gate_pre, ff, k as f64, &d_gate);
        }
        None => geglu_backward_f32(&t.gate_pre, &t.up, &d_act, &mut d_gate, &mut d_up),
    }
    let mut dh2 = vec![0f32; n * hidden];
    let mut tmp = vec![0f32; n * hidden];
    linear_backward(&w.gate, lg.as_mut(), dr(Proj::Gate), &t.h2, n, &d_gate, &mut dh2);
    linear_backward(&w.up, lu.as_mut(), dr(Proj::Up), &t.h2, n, &d_up, &mut tmp);
    add(&mut dh2, &tmp);
    rms_norm_backward(&t.x_mid, &w.ffn_norm, eps, &dh2, &mut tmp);
    add(dx, &tmp);
    if let Some(dr) = d_moe_r {
        add(dx, &dr); // the experts' and the router's share
    }
    // now d x_mid

    // Attention: x_mid = x_in + post(o(attn(rope(norm(q(h1))), …))); Gemma 3n
    // adds LAuReL and scales: x_mid = (x_in + post(o(…)) + laurel(h1)) / √2.
    if w.laurel.is_some() {
        dx.iter_mut().for_each(|v| *v *= std::f32::consts::FRAC_1_SQRT_2);
    }
    let mut d_o = vec![0f32; n * hidden];
    match &w.post_attn_norm {
        Some(g) => rms_norm_backward(&t.o_out, g, eps, dx, &mut d_o),
        None => d_o.copy_from_slice(dx),
    }
    let mut d_att = vec![0f32; n * qd];
    linear_backward(&w.o, lo.as_mut(), dr(Proj::O), &t.att, n, &d_o, &mut d_att);
    let (mut dq, mut dk, mut dv) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
    let shape = model.layer_attention(l);
    // A KV-sharing layer attends to its source layer's keys and values.
    let kv_layer = spec.kv_source.unwrap_or(l);
    let src = &tape.layers[kv_layer];
    attention_backward_segments(&shape, seqs, &t.q, &src.k, &src.v, &d_att, &mut dq, &mut dk, &mut dv);
    if spec.kv_source.is_some() {
        match &mut shared_kv[kv_layer] {
            Some((ak, av)) => {
                add(ak, &dk);
                add(av, &dv);
            }
            slot => *slot = Some((std::mem::take(&mut dk), std::mem::take(&mut dv))),
        }
    } else if let Some((ak, av)) = shared_kv[l].take() {
        add(&mut dk, &ak);
        add(&mut dv, &av);
    }
    let own_kv = spec.kv_source.is_none();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &(r0, len) in seqs {
        for p in 0..len {
            rope_angles(p, model.inv_freq(l), &mut cos, &mut sin);
            for h in dq[(r0 + p) * qd..(r0 + p + 1) * qd].chunks_exact_mut(hd) {
                rope_backward(h, &cos, &sin);
            }
            if own_kv {
                for h in dk[(r0 + p) * kvd..(r0 + p + 1) * kvd].chunks_exact_mut(hd) {
                    rope_backward(h, &cos, &sin);
                }
            }
        }
    }
    if let Some(qn) = &w.q_norm {
        let mut d = vec![0f32; n * qd];
        rms_norm_backward(&t.q_pre, qn, eps, &dq, &mut d);
        dq = d;
    }
    let mut dh1 = vec![0f32; n * hidden];
    linear_backward(&w.q, lq.as_mut(), dr(Proj::Q), &t.h1, n, &dq, &mut dh1);
    if own_kv {
        if let Some(kn) = &w.k_norm {
            let mut d = vec![0f32; n * kvd];
            rms_norm_backward(&t.k_pre, kn, eps, &dk, &mut d);
            dk = d;
        }
        if cfg.v_norm {
            // Gemma 4: a gain-free RMSNorm on each value head.
            let mut d = vec![0f32; n * kvd];
            rms_norm_backward(&t.v_pre, &vec![1.0; hd], eps, &dv, &mut d);
            dv = d;
        }
        if spec.k_eq_v {
            // The values are the key projection's raw output.
            add(&mut dk, &dv);
        }
        linear_backward(&w.k, lk.as_mut(), dr(Proj::K), &t.h1, n, &dk, &mut tmp);
        add(&mut dh1, &tmp);
        if !spec.k_eq_v {
            linear_backward(&w.v, lv.as_mut(), dr(Proj::V), &t.h1, n, &dv, &mut tmp);
            add(&mut dh1, &tmp);
        }
    }
    if let Some(lw) = &w.laurel {
        // LAuReL's output is h1 + norm(right(left(h1))).
        add(&mut dh1, dx);
        add(&mut dh1, &laurel_backward(&lw.left, &lw.right, &lw.norm, &t.laurel_z, eps, dx));
    }
    rms_norm_backward(&t.x_in, &w.attn_norm, eps, &dh1, &mut tmp);
    add(dx, &tmp);
}

/// One Gemma 3n layer backwards over the gradient of all its AltUp streams
/// `ds` `[S, n, hidden]` (in place: the layer's output streams on entry, its
/// input streams on return): the per-layer input added to streams 1.., the
/// correction from the block's output, the block itself on the active
/// stream's prediction, and the prediction from the input streams.
fn altup_layer_backward(
    model: &Model,
    l: usize,
    tape: &Tape,
    lora: &mut [Option<LoraParam>; 7],
    dr: &dyn Fn(Proj) -> Option<(f32, u64)>,
    shared_kv: &mut [Option<(Vec<f32>, Vec<f32>)>],
    ds: &mut Vec<f32>,
) {
    let cfg = &model.config;
    let (Some(spec), Some(aw)) = (cfg.altup, &model.weights.layers[l].altup) else { return };
    let w = &model.weights.layers[l];
    let t = &tape.layers[l];
    let hidden = cfg.hidden_size;
    let eps = cfg.rms_norm_eps as f64;
    let len = ds.len() / spec.streams;
    let (a0, a1) = (spec.active * len, (spec.active + 1) * len);
    let altup = AltUpRef {
        router: gemma_quant::to_f32_vec(&aw.router.storage),
        router_norm: aw.router_norm.clone(),
        prediction: aw.prediction_coefs.clone(),
        correction: aw.correction_coefs.clone(),
        s: spec.streams,
        active: spec.active,
    };
    // Streams 1.. received ple(first), first = the corrected active stream (scaled).
    if let Some(ple) = &w.ple {
        let mut d_ple = vec![0f32; len];
        for st in ds[len..].chunks_exact(len) {
            add(&mut d_ple, st);
        }
        let mut d_first = ple_input_grad(ple, t, eps, &d_ple);
        if spec.correct_scale {
            for row in d_first.chunks_exact_mut(hidden) {
                row.iter_mut().zip(&aw.correct_output_scale).for_each(|(v, s)| *v *= s);
            }
        }
        add(&mut ds[a0..a1], &d_first);
    }
    let predictions = predict(&altup, &t.streams_in, hidden, eps);
    let (mut dp, mut dy) = correct_backward(&altup, &predictions, &t.block_out, hidden, eps, ds);
    block_backward(model, l, tape, lora, dr, shared_kv, &mut dy);
    add(&mut dp[a0..a1], &dy);
    *ds = predict_backward(&altup, &t.streams_in, hidden, eps, &dp);
}
