//! What the training forward records for the backward: a [`Tape`] of one
//! [`LayerTape`] per block (llm.c's activation tensors). The training forward
//! itself is `forward/train.rs`.


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
    /// Record only `x_in` (gradient checkpointing: see `Model::recompute_layer`);
    /// a layer whose keys and values later layers share keeps `k` and `v`
    /// too, and a Gemma 3n layer its `streams_in`.
    pub input_only: bool,
}

impl LayerTape {
    /// Free everything but the block's input (after its backward).
    pub fn release(&mut self) {
        let keep = std::mem::take(&mut self.x_in);
        let streams = std::mem::take(&mut self.streams_in);
        let input_only = self.input_only;
        *self = Self { x_in: keep, streams_in: streams, input_only, ..Self::default() };
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
    /// Per-layer inputs of every row `[n, layers · P]` (Gemma 3n/4 E models):
    /// what a block's recompute needs.
    pub ple: Vec<f32>,
    /// Gradient checkpointing: blocks keep only their input in the forward.
    pub checkpointing: bool,
}

/// Copy `v` into `dst` (reusing its allocation).
pub(crate) fn record(dst: &mut Vec<f32>, v: &[f32]) {
    dst.clear();
    dst.extend_from_slice(v);
}
