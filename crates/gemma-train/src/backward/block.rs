//! The gradient through one block: the forward's named steps
//! (`gemma_model::forward::block`, same names, same table) run backwards.
//! Each step reads what its forward recorded on the layer's tape and turns
//! the gradient of its output into the gradient of its input, adding the
//! LoRA gradients of its projections on the way:
//!
//! | forward step | its backward here | generation ops |
//! | --- | --- | --- |
//! | `layer_out` | [`LayerGrad::layer_out`], [`LayerGrad::altup_layer_out`] | `ops::ple`, `ops::altup` |
//! | `ffn_out` | [`LayerGrad::ffn_out`] | `ops::norm` |
//! | `experts` | [`LayerGrad::experts`] | `ops::moe` |
//! | `ffn` | [`LayerGrad::ffn`] | `ops::linear`, `ops::geglu`, `ops::altup` (sparse gate) |
//! | `attention_out` | [`LayerGrad::attention_out`] | `ops::linear`, `ops::norm` |
//! | `attend` | [`LayerGrad::attend`] (KV sharing: `shared_kv`) | `ops::attention` |
//! | `rope_and_store` | [`LayerGrad::rope`] | `ops::rope` |
//! | `qkv` | [`LayerGrad::qkv`] | `ops::linear`, `ops::norm` |
//! | `attention_norm` | [`LayerGrad::attention_norm`] | `ops::norm`, `ops::altup` (LAuReL) |
//! | `altup_predict` | [`LayerGrad::altup_predict`] | `ops::altup` |

use crate::ops::altup::{correct_backward, laurel_backward, predict, predict_backward, sparse_gate, sparse_gate_backward, AltUpRef};
use crate::ops::attention::attention_backward_segments;
use crate::ops::geglu::geglu_backward_f32;
use crate::ops::linear::{linear_backward, LoraParam};
use crate::ops::moe::moe_backward;
use crate::ops::norm::rms_norm_backward;
use crate::ops::ple::{ple_backward, ple_input_grad};
use crate::ops::rope::rope_backward;
use gemma_kernels::ops::rope_angles;
use gemma_model::tape::LayerTape;
use gemma_model::tensors::Proj;
use gemma_model::{Model, Tape};

/// Key and value gradients `[rows, kv_dim]` of one layer's cache.
pub(super) type KvGrad = (Vec<f32>, Vec<f32>);

/// What the backward of block `l` reads and where it adds its gradients.
pub(super) struct LayerGrad<'a> {
    pub model: &'a Model,
    pub l: usize,
    pub tape: &'a Tape,
    /// The layer's LoRA pairs (slot order of [`Proj`]) and their gradients.
    pub lora: &'a mut [Option<LoraParam>; 7],
    /// LoRA dropout (probability, seed) of each projection.
    pub dr: &'a dyn Fn(Proj) -> Option<(f32, u64)>,
    /// Gradients of the keys and values a KV-sharing layer read from an
    /// earlier layer's cache, waiting for that layer's backward.
    pub shared_kv: &'a mut [Option<KvGrad>],
}

/// `a += b`.
pub(super) fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

impl LayerGrad<'_> {
    fn t(&self) -> &LayerTape {
        &self.tape.layers[self.l]
    }

    fn eps(&self) -> f64 {
        self.model.config.rms_norm_eps as f64
    }

    /// `linear_backward` of projection `p` with its LoRA pair and dropout.
    fn linear(&mut self, p: Proj, w: &gemma_core::Matrix, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = x.len() / w.cols;
        linear_backward(w, self.lora[p.index()].as_mut(), (self.dr)(p), x, n, dy, dx);
    }

    /// The whole block: `dx` holds the gradient of the block's output on
    /// entry and of its input on return.
    pub fn block(&mut self, dx: &mut [f32]) {
        self.layer_out(dx);
        let d_ffn = self.ffn_out(dx);
        let (d_down, d_router) = self.experts(d_ffn);
        self.ffn(&d_down, dx);
        if let Some(dr) = d_router {
            add(dx, &dr); // the experts' and the router's share
        }
        // now d x_mid
        let d_att = self.attention_out(dx);
        let (mut dq, mut dk, dv) = self.attend(&d_att);
        self.rope(&mut dq, &mut dk);
        let dh1 = self.qkv(dq, dk, dv);
        self.attention_norm(dh1, dx);
    }

    /// Gemma 4: `x_out = s · (x + ple(x))` (Gemma 3n's per-layer input
    /// feeds the AltUp streams: [`Self::altup_layer_out`]).
    fn layer_out(&self, dx: &mut [f32]) {
        let w = &self.model.weights.layers[self.l];
        if let Some(s) = w.layer_scalar {
            dx.iter_mut().for_each(|v| *v *= s);
        }
        if let (Some(ple), None) = (&w.ple, &w.altup) {
            ple_backward(ple, self.t(), self.eps(), dx);
        }
    }

    /// `x_out = x_mid + post(ffn)`: returns the gradient of the FFN's
    /// output (the dense MLP's, plus the experts' beside it).
    fn ffn_out(&self, dx: &[f32]) -> Vec<f32> {
        let (w, t) = (&self.model.weights.layers[self.l], self.t());
        let post_in = if w.moe.is_some() { &t.moe_sum } else { &t.down_out };
        let mut d = vec![0f32; dx.len()];
        match &w.post_ffn_norm {
            Some(g) => rms_norm_backward(post_in, g, self.eps(), dx, &mut d),
            None => d.copy_from_slice(dx),
        }
        d
    }

    /// Gemma 4's experts beside the dense MLP: returns the gradient of the
    /// dense MLP's output and the share of `x_mid` through the router and
    /// the experts' inputs (added after the MLP's, [`Self::block`]).
    fn experts(&self, d_ffn: Vec<f32>) -> (Vec<f32>, Option<Vec<f32>>) {
        let Some(moe) = &self.model.weights.layers[self.l].moe else { return (d_ffn, None) };
        let mut dr = vec![0f32; d_ffn.len()];
        let d_down = moe_backward(moe, self.t(), self.eps(), &d_ffn, &mut dr);
        (d_down, Some(dr))
    }

    /// The dense MLP `down(gelu(gate(h2)) · up(h2))`, `h2 = norm(x_mid)`
    /// (Gemma 3n: GELU of the sparse gate `relu(g − (mean + k·std))`): adds
    /// its share to `dx`.
    fn ffn(&mut self, d_down: &[f32], dx: &mut [f32]) {
        let (model, l, tape) = (self.model, self.l, self.tape);
        let (w, t, spec) = (&model.weights.layers[l], &tape.layers[l], &model.config.layers[l]);
        let (hidden, ff) = (model.config.hidden_size, spec.intermediate_size);
        let n = dx.len() / hidden;
        let mut d_act = vec![0f32; n * ff];
        self.linear(Proj::Down, &w.down, &t.act, d_down, &mut d_act);
        let (mut d_gate, mut d_up) = (vec![0f32; n * ff], vec![0f32; n * ff]);
        match spec.gate_sparsity_k {
            Some(k) => {
                let sparse = sparse_gate(&t.gate_pre, ff, k as f64);
                geglu_backward_f32(&sparse, &t.up, &d_act, &mut d_gate, &mut d_up);
                d_gate = sparse_gate_backward(&t.gate_pre, ff, k as f64, &d_gate);
            }
            None => geglu_backward_f32(&t.gate_pre, &t.up, &d_act, &mut d_gate, &mut d_up),
        }
        let mut dh2 = vec![0f32; n * hidden];
        let mut tmp = vec![0f32; n * hidden];
        self.linear(Proj::Gate, &w.gate, &t.h2, &d_gate, &mut dh2);
        self.linear(Proj::Up, &w.up, &t.h2, &d_up, &mut tmp);
        add(&mut dh2, &tmp);
        rms_norm_backward(&t.x_mid, &w.ffn_norm, self.eps(), &dh2, &mut tmp);
        add(dx, &tmp);
    }

    /// `x_mid = x_in + post(o(att))` (Gemma 3n: `(x_in + post(o(att)) +
    /// laurel(h1)) / √2`): turns `dx` into d`x_mid`'s residual share (the
    /// `/√2` applied) and returns the gradient of `att`.
    fn attention_out(&mut self, dx: &mut [f32]) -> Vec<f32> {
        let (model, l, tape) = (self.model, self.l, self.tape);
        let (w, t) = (&model.weights.layers[l], &tape.layers[l]);
        if w.laurel.is_some() {
            dx.iter_mut().for_each(|v| *v *= std::f32::consts::FRAC_1_SQRT_2);
        }
        let mut d_o = vec![0f32; dx.len()];
        match &w.post_attn_norm {
            Some(g) => rms_norm_backward(&t.o_out, g, self.eps(), dx, &mut d_o),
            None => d_o.copy_from_slice(dx),
        }
        let mut d_att = vec![0f32; t.att.len()];
        self.linear(Proj::O, &w.o, &t.att, &d_o, &mut d_att);
        d_att
    }

    /// Attention over the layer's keys and values (a KV-sharing layer's
    /// source's): returns `(dq, dk, dv)`. A sharing layer leaves its key and
    /// value gradients in `shared_kv` for its source (whose own are added
    /// when its turn comes) and returns them empty.
    fn attend(&mut self, d_att: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (model, l, tape) = (self.model, self.l, self.tape);
        let spec = &model.config.layers[l];
        let (qd, kvd) = (model.config.layer_q_dim(l), model.config.layer_kv_dim(l));
        let n = d_att.len() / qd;
        let (mut dq, mut dk, mut dv) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
        let kv_layer = spec.kv_source.unwrap_or(l);
        let (t, src) = (&tape.layers[l], &tape.layers[kv_layer]);
        attention_backward_segments(&model.layer_attention(l), &tape.seqs, &t.q, &src.k, &src.v, d_att, &mut dq, &mut dk, &mut dv);
        if spec.kv_source.is_some() {
            match &mut self.shared_kv[kv_layer] {
                Some((ak, av)) => {
                    add(ak, &dk);
                    add(av, &dv);
                }
                slot => *slot = Some((std::mem::take(&mut dk), std::mem::take(&mut dv))),
            }
        } else if let Some((ak, av)) = self.shared_kv[l].take() {
            add(&mut dk, &ak);
            add(&mut dv, &av);
        }
        (dq, dk, dv)
    }

    /// RoPE backwards on `dq` and (own keys only) `dk`, at each row's position.
    fn rope(&self, dq: &mut [f32], dk: &mut [f32]) {
        let (model, l) = (self.model, self.l);
        let spec = &model.config.layers[l];
        let (hd, qd, kvd) = (spec.head_dim, model.config.layer_q_dim(l), model.config.layer_kv_dim(l));
        let own_kv = spec.kv_source.is_none();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for &(r0, len) in &self.tape.seqs {
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
    }

    /// qk-norm, Gemma 4's value norm and `k_eq_v`, and the q/k/v
    /// projections: returns the gradient of `h1` (the normed input).
    fn qkv(&mut self, mut dq: Vec<f32>, mut dk: Vec<f32>, mut dv: Vec<f32>) -> Vec<f32> {
        let (model, l, tape) = (self.model, self.l, self.tape);
        let (cfg, w, t) = (&model.config, &model.weights.layers[l], &tape.layers[l]);
        let spec = &cfg.layers[l];
        let (hidden, eps) = (cfg.hidden_size, self.eps());
        let n = t.h1.len() / hidden;
        if let Some(qn) = &w.q_norm {
            let mut d = vec![0f32; dq.len()];
            rms_norm_backward(&t.q_pre, qn, eps, &dq, &mut d);
            dq = d;
        }
        let mut dh1 = vec![0f32; n * hidden];
        self.linear(Proj::Q, &w.q, &t.h1, &dq, &mut dh1);
        if spec.kv_source.is_none() {
            let mut tmp = vec![0f32; n * hidden];
            if let Some(kn) = &w.k_norm {
                let mut d = vec![0f32; dk.len()];
                rms_norm_backward(&t.k_pre, kn, eps, &dk, &mut d);
                dk = d;
            }
            if cfg.v_norm {
                // Gemma 4: a gain-free RMSNorm on each value head.
                let mut d = vec![0f32; dv.len()];
                rms_norm_backward(&t.v_pre, &vec![1.0; spec.head_dim], eps, &dv, &mut d);
                dv = d;
            }
            if spec.k_eq_v {
                // The values are the key projection's raw output.
                add(&mut dk, &dv);
            }
            self.linear(Proj::K, &w.k, &t.h1, &dk, &mut tmp);
            add(&mut dh1, &tmp);
            if !spec.k_eq_v {
                self.linear(Proj::V, &w.v, &t.h1, &dv, &mut tmp);
                add(&mut dh1, &tmp);
            }
        }
        dh1
    }

    /// `h1 = norm(x_in)` (Gemma 3n: LAuReL's `h1 + norm(right(left(h1)))`
    /// beside attention, whose gradient is d`x_mid`, already in `dx`): adds
    /// the share of `x_in` to `dx`.
    fn attention_norm(&self, mut dh1: Vec<f32>, dx: &mut [f32]) {
        let (w, t, eps) = (&self.model.weights.layers[self.l], self.t(), self.eps());
        if let Some(lw) = &w.laurel {
            add(&mut dh1, dx);
            add(&mut dh1, &laurel_backward(&lw.left, &lw.right, &lw.norm, &t.laurel_z, eps, dx));
        }
        let mut tmp = vec![0f32; dx.len()];
        rms_norm_backward(&t.x_in, &w.attn_norm, eps, &dh1, &mut tmp);
        add(dx, &tmp);
    }

    /// One Gemma 3n layer backwards over the gradient of all its AltUp
    /// streams `ds` `[S, n, hidden]` (in place: the layer's output streams
    /// on entry, its input streams on return).
    pub fn altup_layer(&mut self, ds: &mut Vec<f32>) {
        let Some(altup) = self.altup_ref() else { return };
        let mut dy = self.altup_layer_out(&altup, ds);
        self.block(&mut dy);
        self.altup_predict(&altup, dy, ds);
    }

    /// The layer's AltUp weights in the ops' form.
    fn altup_ref(&self) -> Option<AltUpRef<f32>> {
        let (Some(spec), Some(aw)) = (self.model.config.altup, &self.model.weights.layers[self.l].altup) else { return None };
        Some(AltUpRef {
            router: gemma_quant::to_f32_vec(&aw.router.storage),
            router_norm: aw.router_norm.clone(),
            prediction: aw.prediction_coefs.clone(),
            correction: aw.correction_coefs.clone(),
            s: spec.streams,
            active: spec.active,
        })
    }

    /// Gemma 3n's layer end: the per-layer input of the (scaled) corrected
    /// active stream went to streams 1.., and the correction mixed the
    /// block's output into the predictions. Turns `ds` into the gradient of
    /// the predictions and returns the gradient of the block's output.
    fn altup_layer_out(&self, altup: &AltUpRef<f32>, ds: &mut Vec<f32>) -> Vec<f32> {
        let (cfg, w, t, eps) = (&self.model.config, &self.model.weights.layers[self.l], self.t(), self.eps());
        let hidden = cfg.hidden_size;
        let len = ds.len() / altup.s;
        let (a0, a1) = (altup.active * len, (altup.active + 1) * len);
        if let (Some(ple), Some(aw), Some(spec)) = (&w.ple, &w.altup, cfg.altup) {
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
        let predictions = predict(altup, &t.streams_in, hidden, eps);
        let (dp, dy) = correct_backward(altup, &predictions, &t.block_out, hidden, eps, ds);
        *ds = dp;
        dy
    }

    /// The prediction of all streams from the layer's input streams: `ds`
    /// (the predictions' gradient) plus `dy` (the block's input, on the
    /// active stream) becomes the gradient of the input streams.
    fn altup_predict(&self, altup: &AltUpRef<f32>, dy: Vec<f32>, ds: &mut Vec<f32>) {
        let len = ds.len() / altup.s;
        let (a0, a1) = (altup.active * len, (altup.active + 1) * len);
        add(&mut ds[a0..a1], &dy);
        *ds = predict_backward(altup, &self.t().streams_in, self.model.config.hidden_size, self.eps(), ds);
    }
}
