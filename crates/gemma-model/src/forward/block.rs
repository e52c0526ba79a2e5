//! One transformer block as a composition of named steps, for every
//! generation: [`Model::block`] runs them in order over `sc.x` `[rows,
//! hidden]`. Each step reads the layer's weights and spec from [`Step`],
//! works in the [`Workspace`], and records into the layer's tape what its
//! backward needs (training); the backward runs the same steps in reverse
//! under the same names (`gemma_train::backward`).
//!
//! | step | what | generations |
//! | --- | --- | --- |
//! | [`Step::altup_predict`] | the active stream predicted from all AltUp streams | 3n |
//! | [`Step::attention_norm`] | pre-attention RMSNorm; LAuReL's low-rank branch | all; 3n |
//! | [`Step::qkv`] | q/k/v projections (+ LoRA), qk-norm, `k_eq_v`, scale-free value norm | all; 3, 3n, 4 |
//! | [`Step::rope_and_store`] | RoPE (local/global, partial) and the KV store; KV sharing | all; 4 |
//! | [`Step::attend`] | causal attention (sliding window, soft-cap, groups) | all |
//! | [`Step::attention_out`] | output projection, post-norm, residual (LAuReL's `/√2`) | all |
//! | [`Step::ffn`] | pre-FFN norm, gate/up, activation sparsity, GeGLU, down | all; 3n |
//! | [`Step::experts`] | router and experts beside the dense MLP | 4 MoE |
//! | [`Step::ffn_out`] | post-FFN norm and residual | all |
//! | [`Step::layer_out`] | AltUp correction, per-layer input, layer scalar | 3n, 4 |

use super::{gemma3n, gemma4, Model, Numerics, Seg};
use crate::attention::{attention, decode_attention};
use crate::cache::{KvCache, LayerCache};
use crate::config::LayerSpec;
use crate::lora::{LoraAdapter, LoraPair};
use crate::tape::{record, LayerTape};
use crate::tensors::Proj;
use crate::weights::LayerWeights;
use crate::workspace::{buf, Workspace};
use gemma_kernels::geglu::{geglu, geglu_f16_table};
use gemma_kernels::ops::{rms_norm_in_place, rope_angles, rope_angles_ggml, rope_with};
use gemma_kernels::{add_in_place, rms_norm};

/// What every step of block `l` reads: the model, the layer's weights and
/// spec, the rows, and how this forward computes (training or not).
pub(crate) struct Step<'m, 's> {
    m: &'m Model,
    l: usize,
    w: &'m LayerWeights,
    spec: &'m LayerSpec,
    /// The rows of each sequence.
    segs: &'s [Seg<'s>],
    /// The rows the projections run over: all in one product while
    /// training or sharing products, else `segs`.
    psegs: &'s [Seg<'s>],
    /// Rows in all.
    n: usize,
    training: bool,
    numerics: Numerics,
    /// The adapter being trained (it rides on the sequences).
    trained: Option<&'s LoraAdapter>,
    /// LoRA dropout (probability, seed) while training.
    drop: Option<(f32, u64)>,
}

/// The layer's tape while training (`None` at inference).
pub(crate) struct Rec<'t>(pub Option<&'t mut LayerTape>);

impl Rec<'_> {
    /// Keep `v` in `field` unless only the block input is kept (gradient
    /// checkpointing: the backward runs the block again).
    fn keep(&mut self, field: fn(&mut LayerTape) -> &mut Vec<f32>, v: &[f32]) {
        if let Some(t) = self.full() {
            record(field(t), v);
        }
    }

    /// Keep `v` in `field` also under gradient checkpointing.
    fn always(&mut self, field: fn(&mut LayerTape) -> &mut Vec<f32>, v: &[f32]) {
        if let Some(t) = self.0.as_deref_mut() {
            record(field(t), v);
        }
    }

    /// The tape when it records every step.
    fn full(&mut self) -> Option<&mut LayerTape> {
        self.0.as_deref_mut().filter(|t| !t.input_only)
    }
}

impl Model {
    /// One transformer block, in place on `sc.x` `[rows, hidden]`: the named
    /// steps in order. With `tape`, each step's result is recorded for the
    /// backward (training); `drop` is the LoRA dropout (probability, seed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block(
        &self,
        l: usize,
        w: &LayerWeights,
        segs: &[Seg],
        items: &mut [(&[u32], &mut KvCache)],
        sc: &mut Workspace,
        tape: Option<&mut LayerTape>,
        drop: Option<(f32, u64)>,
    ) {
        let n: usize = segs.iter().map(|s| s.n).sum();
        // Training: the adapter being trained rides on the sequences (every
        // one the same); it goes into the projections with its dropout, in
        // place of a load-time adapter. Training meets quantized weights with
        // f32 activations (QLoRA as bitsandbytes computes it: the dequantized
        // function) and runs the reference numerics.
        let training = tape.is_some();
        // Training runs each projection once over the rows of all sequences
        // (a row's result does not depend on the others: the training test
        // checks it bit for bit); serving keeps its per-segment products.
        let whole = [Seg { row0: 0, n, start: 0, item: 0, decode: false, adapter: None, exact: training, media: &[] }];
        let st = Step {
            m: self,
            l,
            w,
            spec: &self.config.layers[l],
            segs,
            psegs: if training || sc.shared_products { &whole } else { segs },
            n,
            training,
            numerics: if training { Numerics::Reference } else { self.numerics },
            trained: if training { segs.first().and_then(|s| s.adapter) } else { None },
            drop,
        };
        let mut rec = Rec(tape);
        st.altup_predict(sc, &mut rec);
        // Kept also under gradient checkpointing: a recompute starts from it.
        rec.always(|t| &mut t.x_in, &sc.x[..n * self.config.hidden_size]);
        st.attention_norm(sc, &mut rec);
        st.qkv(sc, &mut rec);
        st.rope_and_store(sc, items, &mut rec);
        st.attend(sc, items, &mut rec);
        st.attention_out(sc, &mut rec);
        st.ffn(sc, &mut rec);
        st.experts(sc, &mut rec);
        st.ffn_out(sc);
        st.layer_out(sc, &mut rec);
    }
}

impl Step<'_, '_> {
    /// Width of the residual stream.
    fn hidden(&self) -> usize {
        self.m.config.hidden_size
    }

    /// `y = x·Wᵀ` for projection `p` (+ the trained or load-time LoRA pair,
    /// with dropout while training, + per-request adapters).
    fn project(&self, p: Proj, x: &[f32], w: &gemma_core::Matrix, y: &mut [f32]) {
        let l = self.l;
        let pair: Option<&LoraPair> = self.trained.or(self.m.lora.as_ref()).and_then(|a| a.layers[l].parts[p.index()].as_ref());
        let drop = self.drop.map(|(pr, seed)| (pr, crate::lora::dropout_seed(seed, l, p.index())));
        Model::project(self.psegs, x, w, y, pair, drop, self.training);
        Model::adapter_deltas(self.psegs, x, l, p, y);
    }

    /// Gemma 3n: the streams `[S, rows, hidden]` are kept (also under
    /// checkpointing) and the active stream's prediction becomes `x`.
    fn altup_predict(&self, sc: &mut Workspace, rec: &mut Rec) {
        let (Some(aw), Some(spec)) = (&self.w.altup, self.m.config.altup) else { return };
        let len = self.n * self.hidden();
        rec.always(|t| &mut t.streams_in, &sc.streams[..spec.streams * len]);
        gemma3n::predict(aw, spec, self.segs, &mut sc.streams, &mut sc.x[..len], self.m.config.rms_norm_eps);
    }

    /// `h = norm(x)` into `sc.h`; Gemma 3n's LAuReL branch of `h` into `sc.laurel`.
    fn attention_norm(&self, sc: &mut Workspace, rec: &mut Rec) {
        let (len, eps) = (self.n * self.hidden(), self.m.config.rms_norm_eps);
        let h = buf(&mut sc.h, len);
        rms_norm(&sc.x[..len], &self.w.attn_norm, eps, h);
        rec.keep(|t| &mut t.h1, h);
        if let Some(lw) = &self.w.laurel {
            gemma3n::laurel(lw, self.segs, h, &mut sc.laurel, eps, rec.full());
        }
    }

    /// `q, k, v` `[rows, heads·hd]`, `[rows, kv_heads·hd]` from `sc.h`, with
    /// qk-norm and Gemma 4's value norm; a KV-sharing layer computes no keys
    /// or values (it reads its source layer's cache).
    fn qkv(&self, sc: &mut Workspace, rec: &mut Rec) {
        let (cfg, l, n, w, spec) = (&self.m.config, self.l, self.n, self.w, self.spec);
        let (qd, kvd, eps) = (cfg.layer_q_dim(l), cfg.layer_kv_dim(l), cfg.rms_norm_eps);
        let own_kv = spec.kv_source.is_none();
        let h = &sc.h[..n * cfg.hidden_size];
        let q = buf(&mut sc.q, n * qd);
        let k = buf(&mut sc.k, n * kvd);
        let v = buf(&mut sc.v, n * kvd);
        self.project(Proj::Q, h, &w.q, q);
        if own_kv {
            self.project(Proj::K, h, &w.k, k);
            if spec.k_eq_v {
                // Values are the key projection's raw output (before k_norm and RoPE).
                v.copy_from_slice(k);
            } else {
                self.project(Proj::V, h, &w.v, v);
            }
        }
        rec.keep(|t| &mut t.q_pre, q);
        rec.keep(|t| &mut t.k_pre, k);
        if let Some(qn) = &w.q_norm {
            rms_norm_in_place(q, qn, eps);
        }
        if let Some(kn) = &w.k_norm {
            rms_norm_in_place(k, kn, eps);
        }
        if cfg.v_norm && own_kv {
            rec.keep(|t| &mut t.v_pre, v);
            gemma4::scale_free_norm(v, spec.head_dim, eps);
        }
        rec.keep(|t| &mut t.v, v);
    }

    /// RoPE on `q` and (own keys only) `k` at each row's position, and the
    /// keys and values into the layer's cache.
    fn rope_and_store(&self, sc: &mut Workspace, items: &mut [(&[u32], &mut KvCache)], rec: &mut Rec) {
        let (cfg, l, n, spec) = (&self.m.config, self.l, self.n, self.spec);
        let (hd, qd, kvd) = (spec.head_dim, cfg.layer_q_dim(l), cfg.layer_kv_dim(l));
        let kv_layer = spec.kv_source.unwrap_or(l);
        let own_kv = spec.kv_source.is_none();
        let (q, k, v) = (&mut sc.q[..n * qd], &mut sc.k[..n * kvd], &sc.v[..n * kvd]);
        let inv_freq = &self.m.inv_freq[l];
        for seg in self.segs {
            let kv = &mut items[seg.item].1.layers[kv_layer];
            for t in seg.row0..seg.row0 + seg.n {
                let pos = seg.start + t - seg.row0;
                match self.numerics {
                    Numerics::Reference => rope_angles(pos, inv_freq, &mut sc.cos, &mut sc.sin),
                    Numerics::LlamaCpp => {
                        let (step, scale) = self.m.rope_ggml[l];
                        rope_angles_ggml(pos, step, scale, hd / 2, &mut sc.cos, &mut sc.sin);
                        // Partial RoPE (llama.cpp: huge frequency factors): the other pairs pass through.
                        let pairs = spec.rope_pairs();
                        sc.cos[pairs..].fill(1.0);
                        sc.sin[pairs..].fill(0.0);
                    }
                }
                for head in q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                    rope_with(head, &sc.cos, &sc.sin);
                }
                if own_kv {
                    for head in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd) {
                        rope_with(head, &sc.cos, &sc.sin);
                    }
                    kv.store(seg.start + t - seg.row0, &k[t * kvd..(t + 1) * kvd], &v[t * kvd..(t + 1) * kvd]);
                }
            }
        }
        rec.keep(|t| &mut t.q, q);
        rec.keep(|t| &mut t.k, k);
        if let Some(t) = rec.0.as_deref_mut().filter(|t| t.input_only) {
            // Later layers read this layer's keys and values: their recompute
            // (gradient checkpointing) comes before this layer's.
            if cfg.layers.iter().any(|s| s.kv_source == Some(l)) {
                record(&mut t.k, k);
                record(&mut t.v, v);
            }
        }
    }

    /// `att = attention(q, cache)` `[rows, heads·hd]`: several decode rows in
    /// one parallel loop over their sequences (each query computed exactly as
    /// alone), prefill chunks one by one.
    fn attend(&self, sc: &mut Workspace, items: &[(&[u32], &mut KvCache)], rec: &mut Rec) {
        let (l, n) = (self.l, self.n);
        let qd = self.m.config.layer_q_dim(l);
        let kv_layer = self.spec.kv_source.unwrap_or(l);
        let q = &sc.q[..n * qd];
        let att = buf(&mut sc.att, n * qd);
        let decode: Vec<&Seg> = self.segs.iter().filter(|s| s.decode).collect();
        let shape = self.m.attn_shape(l);
        // The last position a row's query reads (one before its own for a
        // `query_ahead` layer, whose driver never starts at 0).
        let last = |s: &Seg| s.start - usize::from(self.spec.query_ahead);
        if decode.len() >= 2 {
            let caches: Vec<(&LayerCache, usize)> = decode.iter().map(|s| (&items[s.item].1.layers[kv_layer], last(s))).collect();
            let rows = decode[0].row0 * qd..(decode[0].row0 + decode.len()) * qd;
            decode_attention(shape, &q[rows.clone()], &caches, &mut att[rows]);
        }
        for seg in self.segs.iter().filter(|s| !s.decode || decode.len() < 2) {
            let kv = &items[seg.item].1.layers[kv_layer];
            let rows = seg.row0 * qd..(seg.row0 + seg.n) * qd;
            let spans: Vec<(usize, usize)> = if self.m.config.image_spans.applies(self.m.config.layers[l].attention.is_sliding()) {
                seg.media.iter().map(|m| (m.at, m.at + m.rows.len() / self.hidden())).collect()
            } else {
                Vec::new()
            };
            attention(shape, &q[rows.clone()], kv, last(seg), &spans, &mut att[rows], &mut sc.kf, &mut sc.vf, &mut sc.tiles);
        }
        rec.keep(|t| &mut t.att, att);
    }

    /// `x += post(o(att))`; Gemma 3n: `x = (x + post(o(att)) + laurel) / √2`.
    fn attention_out(&self, sc: &mut Workspace, rec: &mut Rec) {
        let (n, w) = (self.n, self.w);
        let len = n * self.hidden();
        let att = &sc.att[..n * self.m.config.layer_q_dim(self.l)];
        let a = buf(&mut sc.a, len);
        self.project(Proj::O, att, &w.o, a);
        rec.keep(|t| &mut t.o_out, a);
        if let Some(g) = &w.post_attn_norm {
            rms_norm_in_place(a, g, self.m.config.rms_norm_eps);
        }
        let x = &mut sc.x[..len];
        add_in_place(x, a);
        if w.laurel.is_some() {
            x.iter_mut().zip(&sc.laurel).for_each(|(v, r)| *v = (*v + r) / std::f32::consts::SQRT_2);
        }
        rec.keep(|t| &mut t.x_mid, x);
    }

    /// The dense MLP into `sc.a`: `down(gelu(gate(h)) · up(h))` with `h =
    /// norm(x)`; Gemma 3n's activation sparsity on the gate.
    fn ffn(&self, sc: &mut Workspace, rec: &mut Rec) {
        let (n, w, spec) = (self.n, self.w, self.spec);
        let (len, ff) = (n * self.hidden(), spec.intermediate_size);
        let h = &mut sc.h[..len];
        rms_norm(&sc.x[..len], &w.ffn_norm, self.m.config.rms_norm_eps, h);
        rec.keep(|t| &mut t.h2, h);
        let gate = buf(&mut sc.gate, n * ff);
        let up = buf(&mut sc.up, n * ff);
        self.project(Proj::Gate, h, &w.gate, gate);
        self.project(Proj::Up, h, &w.up, up);
        rec.keep(|t| &mut t.gate_pre, gate);
        rec.keep(|t| &mut t.up, up);
        if let Some(k) = spec.gate_sparsity_k {
            gemma3n::sparsify_gate(gate, ff, k);
        }
        match self.numerics {
            Numerics::Reference => geglu(gate, up),
            Numerics::LlamaCpp => geglu_f16_table(gate, up),
        }
        rec.keep(|t| &mut t.act, gate);
        let a = &mut sc.a[..len];
        self.project(Proj::Down, gate, &w.down, a);
        rec.keep(|t| &mut t.down_out, a);
    }

    /// Gemma 4: experts beside the dense MLP, routed from the residual `x`;
    /// their output joins the dense one in `sc.a`. Training runs the experts
    /// sequence by sequence, as inference does (the expert products'
    /// rounding depends on how many rows share them): the training forward
    /// stays inference's bit for bit.
    fn experts(&self, sc: &mut Workspace, rec: &mut Rec) {
        let Some(moe) = &self.w.moe else { return };
        let len = self.n * self.hidden();
        let msegs = if self.training { self.segs } else { self.psegs };
        let a = &mut sc.a[..len];
        gemma4::moe_block(moe, msegs, &sc.x[..len], a, self.m.config.rms_norm_eps, &mut sc.moe, rec.full());
        rec.keep(|t| &mut t.moe_sum, a);
    }

    /// `x += post(ffn)`.
    fn ffn_out(&self, sc: &mut Workspace) {
        let len = self.n * self.hidden();
        let a = &mut sc.a[..len];
        if let Some(g) = &self.w.post_ffn_norm {
            rms_norm_in_place(a, g, self.m.config.rms_norm_eps);
        }
        add_in_place(&mut sc.x[..len], a);
    }

    /// The generations' layer ends: Gemma 3n corrects the streams from the
    /// block's output and adds the per-layer input (of the scaled active
    /// stream) to streams 1..; Gemma 4 adds the per-layer input to `x` and
    /// scales the layer's output.
    fn layer_out(&self, sc: &mut Workspace, rec: &mut Rec) {
        let (cfg, l, n, w) = (&self.m.config, self.l, self.n, self.w);
        let (hidden, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let len = n * hidden;
        let (layers, p) = (cfg.num_layers(), cfg.per_layer_input_size);
        if let (Some(aw), Some(spec)) = (&w.altup, cfg.altup) {
            rec.keep(|t| &mut t.block_out, &sc.x[..len]);
            gemma3n::correct(aw, spec, self.segs, &mut sc.streams, &sc.x[..len], eps);
            let first = &mut sc.h[..len];
            first.copy_from_slice(&sc.streams[spec.active * len..(spec.active + 1) * len]);
            if spec.correct_scale {
                for row in first.chunks_exact_mut(hidden) {
                    row.iter_mut().zip(&aw.correct_output_scale).for_each(|(v, s)| *v *= s);
                }
            }
            if let Some(ple) = &w.ple {
                rec.keep(|t| &mut t.ple_x, first);
                let y = gemma4::per_layer_delta(ple, l, layers, self.psegs, first, &sc.ple, p, eps, &mut sc.gate, &mut sc.a, rec.full());
                for st in sc.streams[len..spec.streams * len].chunks_exact_mut(len) {
                    add_in_place(st, y);
                }
            }
        } else if let Some(ple) = &w.ple {
            let x = &mut sc.x[..len];
            rec.keep(|t| &mut t.ple_x, x);
            let y = gemma4::per_layer_delta(ple, l, layers, self.psegs, x, &sc.ple, p, eps, &mut sc.gate, &mut sc.a, rec.full());
            add_in_place(x, y);
        }
        if let Some(s) = w.layer_scalar {
            sc.x[..len].iter_mut().for_each(|v| *v *= s);
        }
    }
}
