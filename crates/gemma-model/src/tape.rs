//! The training forward: the same blocks as inference ([`Model::forward`]),
//! run over several whole sequences at once with each block recording what
//! its backward needs into a [`Tape`] (llm.c's activation tensors). Rows are
//! the tokens of all sequences one after another; attention never crosses a
//! sequence (each has its own cache, so packing needs no mask).

use crate::attention::AttnShape;
use crate::cache::KvCache;
use crate::workspace::Workspace;
use crate::forward::{Model, Seg};
use gemma_core::{GemmaError, Result};

/// What one block's backward needs, recorded by the forward. Every buffer
/// is `[rows, ·]` over the rows of all sequences of the call.
#[derive(Debug, Default, Clone)]
pub struct LayerTape {
    /// Residual stream entering the block `[n, hidden]`.
    pub x_in: Vec<f32>,
    /// Pre-attention norm output (input of q/k/v) `[n, hidden]`.
    pub h1: Vec<f32>,
    /// Queries before qk-norm and RoPE `[n, heads·hd]`.
    pub q_pre: Vec<f32>,
    /// Keys before qk-norm and RoPE `[n, kv_heads·hd]`.
    pub k_pre: Vec<f32>,
    /// Queries after qk-norm and RoPE `[n, heads·hd]`.
    pub q: Vec<f32>,
    /// Keys after qk-norm and RoPE `[n, kv_heads·hd]`.
    pub k: Vec<f32>,
    /// Values as attention reads them (after Gemma 4's value norm) `[n, kv_heads·hd]`.
    pub v: Vec<f32>,
    /// Gemma 4: values before the scale-free value norm `[n, kv_heads·hd]` (empty otherwise).
    pub v_pre: Vec<f32>,
    /// Attention output (input of o) `[n, heads·hd]`.
    pub att: Vec<f32>,
    /// Output projection before the post-attention norm `[n, hidden]`.
    pub o_out: Vec<f32>,
    /// Residual stream after attention `[n, hidden]`.
    pub x_mid: Vec<f32>,
    /// Pre-feed-forward norm output (input of gate/up) `[n, hidden]`.
    pub h2: Vec<f32>,
    /// Gate projection before GELU `[n, ff]`.
    pub gate_pre: Vec<f32>,
    /// Up projection `[n, ff]`.
    pub up: Vec<f32>,
    /// `gelu(gate) · up` (input of down) `[n, ff]`.
    pub act: Vec<f32>,
    /// Down projection before the post-feed-forward norm `[n, hidden]`.
    pub down_out: Vec<f32>,
    /// Gemma 3n: the AltUp streams entering the layer (before predict) `[S, n, hidden]`.
    pub streams_in: Vec<f32>,
    /// Gemma 3n: the block's output on the active stream (before correct) `[n, hidden]`.
    pub block_out: Vec<f32>,
    /// Gemma 3n LAuReL: `right(left(h))` before its norm `[n, hidden]`.
    pub laurel_z: Vec<f32>,
    /// Gemma 4 MoE: the dense MLP plus the experts, normed (input of the post-feed-forward norm) `[n, hidden]`.
    pub moe_sum: Vec<f32>,
    /// Gemma 4 MoE: the experts' weighted sum before its norm `[n, hidden]`.
    pub moe_raw: Vec<f32>,
    /// Gemma 4 MoE: each token's routed experts `(row, expert, weight)`, the
    /// weight being the top-k renormalized probability (before the expert's scale).
    pub moe_routes: Vec<(usize, usize, f32)>,
    /// Gemma 4 per-layer input: the residual it reads `[n, hidden]`.
    pub ple_x: Vec<f32>,
    /// Gemma 4 per-layer input: gate projection before GELU `[n, P]`.
    pub ple_gate: Vec<f32>,
    /// Gemma 4 per-layer input: this layer's slice of the per-layer embeddings `[n, P]`.
    pub ple_e: Vec<f32>,
    /// Gemma 4 per-layer input: projection before its norm `[n, hidden]`.
    pub ple_z: Vec<f32>,
    /// Record only `x_in` (gradient checkpointing: see [`Model::recompute_layer`]).
    pub input_only: bool,
}

impl LayerTape {
    /// Free everything but the block's input (after its backward).
    pub fn release(&mut self) {
        let keep = std::mem::take(&mut self.x_in);
        let input_only = self.input_only;
        *self = Self { x_in: keep, input_only, ..Self::default() };
    }
}

/// The recording of one training forward.
#[derive(Debug, Default, Clone)]
pub struct Tape {
    /// One entry per block.
    pub layers: Vec<LayerTape>,
    /// LoRA dropout probability (0: none).
    pub dropout: f32,
    /// Dropout seed of this forward (the backward regenerates the masks).
    pub seed: u64,
    /// `(row0, len)` of each sequence.
    pub seqs: Vec<(usize, usize)>,
    /// Residual stream after the last block `[n, hidden]` (Gemma 3n: the
    /// streams collapsed).
    pub x_out: Vec<f32>,
    /// Gemma 3n: the AltUp streams after the last block `[S, n, hidden]`.
    pub streams_out: Vec<f32>,
    /// Gradient checkpointing: blocks keep only their input in the forward.
    pub checkpointing: bool,
}

/// Copy `v` into `dst` (reusing its allocation).
pub(crate) fn record(dst: &mut Vec<f32>, v: &[f32]) {
    dst.clear();
    dst.extend_from_slice(v);
}

impl Model {
    /// The training forward over whole sequences `seqs` (each from position
    /// 0, attention within each only), through the same blocks as inference,
    /// recording into `tape`; the final residual stream is `tape.x_out`.
    /// Uses the model's LoRA adapter (the one being trained).
    pub fn forward_train(&self, seqs: &[&[u32]], tape: &mut Tape) -> Result<()> {
        let cfg = &self.config;
        if seqs.is_empty() {
            return Err(GemmaError::invalid("batch", "a training step needs at least one sequence"));
        }
        let mut caches = Vec::with_capacity(seqs.len());
        let mut segs = Vec::with_capacity(seqs.len());
        let mut row0 = 0;
        tape.seqs.clear();
        for (i, s) in seqs.iter().enumerate() {
            self.check_tokens(s, 0)?;
            caches.push(KvCache::unbounded(cfg));
            segs.push(Seg { row0, n: s.len(), start: 0, item: i, decode: false, adapter: None });
            tape.seqs.push((row0, s.len()));
            row0 += s.len();
        }
        tape.layers.resize_with(cfg.num_layers(), LayerTape::default);
        let light = tape.checkpointing;
        tape.layers.iter_mut().for_each(|l| l.input_only = light);
        let mut items: Vec<(&[u32], &mut KvCache)> = seqs.iter().copied().zip(caches.iter_mut()).collect();
        let mut sc = Workspace::default();
        self.run_segments(&segs, &mut items, &mut sc, Some(tape));
        record(&mut tape.x_out, &sc.x[..row0 * cfg.hidden_size]);
        if let Some(a) = cfg.altup {
            record(&mut tape.streams_out, &sc.streams[..a.streams * row0 * cfg.hidden_size]);
        }
        Ok(())
    }

    /// Gradient checkpointing: run block `l` again from its recorded input
    /// (same sequences, same dropout masks), recording everything its
    /// backward needs. The result is bit for bit what a full recording holds.
    pub fn recompute_layer(&self, l: usize, seqs: &[&[u32]], tape: &mut Tape) -> Result<()> {
        let cfg = &self.config;
        let (mut caches, mut segs) = (Vec::with_capacity(seqs.len()), Vec::with_capacity(seqs.len()));
        let mut row0 = 0;
        for (i, s) in seqs.iter().enumerate() {
            caches.push(KvCache::unbounded(cfg));
            segs.push(Seg { row0, n: s.len(), start: 0, item: i, decode: false, adapter: None });
            row0 += s.len();
        }
        let hidden = cfg.hidden_size;
        if tape.layers.len() <= l || tape.layers[l].x_in.len() != row0 * hidden {
            return Err(GemmaError::invalid("tape", format!("layer {l} has no recorded input for these sequences")));
        }
        let mut items: Vec<(&[u32], &mut KvCache)> = seqs.iter().copied().zip(caches.iter_mut()).collect();
        let mut sc = Workspace::default();
        record(&mut sc.x, &tape.layers[l].x_in);
        let drop = Some((tape.dropout, tape.seed)).filter(|d| d.0 > 0.0);
        let lt = &mut tape.layers[l];
        lt.input_only = false;
        self.block(l, &self.weights.layers[l], &segs, &mut items, &mut sc, Some(lt), drop);
        lt.input_only = tape.checkpointing;
        Ok(())
    }

    /// Inverse RoPE frequencies of layer `l` (`[head_dim / 2]`).
    pub fn inv_freq(&self, l: usize) -> &[f32] {
        &self.inv_freq[l]
    }

    /// Attention shape and masking of layer `l`.
    pub fn layer_attention(&self, l: usize) -> AttnShape {
        self.attn_shape(l)
    }
}
