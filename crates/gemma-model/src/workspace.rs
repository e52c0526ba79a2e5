//! The per-call buffers of a forward pass, kept apart from the KV cache:
//! the cache holds a sequence's keys and values (its state), a
//! [`Workspace`] the activations one call needs (reused across calls, so a
//! warmed-up decode loop allocates nothing). One workspace serves any
//! number of caches, one call at a time.

/// Activation buffers of one forward pass (shapes in `forward.rs`).
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    pub(crate) x: Vec<f32>,
    pub(crate) h: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) att: Vec<f32>,
    pub(crate) a: Vec<f32>,
    pub(crate) gate: Vec<f32>,
    pub(crate) up: Vec<f32>,
    pub(crate) logits: Vec<f32>,
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
    /// Keys and values converted for attention.
    pub(crate) kf: Vec<f32>,
    pub(crate) vf: Vec<f32>,
    /// Gemma 4: per-layer inputs `[n, layers · P]` and the experts' output.
    pub(crate) ple: Vec<f32>,
    pub(crate) moe: Vec<f32>,
    /// Gemma 3n: the AltUp streams `[S, n, hidden]` and the LAuReL output `[n, hidden]`.
    pub(crate) streams: Vec<f32>,
    pub(crate) laurel: Vec<f32>,
    /// Per-thread attention tile buffers.
    pub(crate) tiles: Vec<crate::attention::TileBufs>,
    /// Run each projection once over the rows of all segments (embedding
    /// batches: faster, but a row's rounding may depend on the batch).
    pub(crate) shared_products: bool,
}

impl Workspace {
    /// An empty workspace (buffers grow on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// The final-normed hidden states `[rows, hidden]` the latest logits
    /// were computed from (row `i` chose logits row `i`): after
    /// [`crate::Model::forward`]'s `Last` the last token's, after
    /// [`crate::Model::forward_verify`] every row's. What Gemma 4's MTP
    /// assistants draft from.
    pub fn head_input(&self, rows: usize, hidden: usize) -> &[f32] {
        &self.h[..rows * hidden]
    }

    /// The latest forward's logits `[rows, vocab]` (as it returned them)
    /// and the hidden states behind them ([`Workspace::head_input`]).
    pub fn last_output(&mut self, rows: usize, vocab: usize, hidden: usize) -> (&mut [f32], &[f32]) {
        (&mut self.logits[..rows * vocab], &self.h[..rows * hidden])
    }
}

/// The first `len` elements of `v`, growing it if needed (contents unspecified).
pub(crate) fn buf(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}
