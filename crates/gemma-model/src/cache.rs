//! The KV cache. Global layers keep every position; sliding-window layers keep
//! a ring of `window + MAX_CHUNK` positions, so memory stays bounded however
//! long the sequence grows.

use crate::config::{AttentionKind, GemmaConfig};
use crate::forward::MAX_CHUNK;

/// Keys and values of one layer. Position `p` lives in slot `p % capacity`.
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// Keys `[slots, kv_dim]`.
    pub k: Vec<f32>,
    /// Values `[slots, kv_dim]`.
    pub v: Vec<f32>,
    /// Ring size in positions (`usize::MAX` for a global layer: never wraps).
    pub capacity: usize,
    /// Sliding window (0 for a global layer).
    window: usize,
    kv_dim: usize,
}

impl LayerCache {
    /// Slot of position `pos`.
    #[inline]
    pub fn slot(&self, pos: usize) -> usize {
        pos % self.capacity
    }

    /// Make room for positions `..end`.
    fn reserve(&mut self, end: usize) {
        let slots = end.min(self.capacity);
        if self.k.len() < slots * self.kv_dim {
            self.k.resize(slots * self.kv_dim, 0.0);
            self.v.resize(slots * self.kv_dim, 0.0);
        }
    }

    /// Key vector at position `pos` `[kv_dim]`.
    #[inline]
    pub fn key(&self, pos: usize) -> &[f32] {
        let s = self.slot(pos) * self.kv_dim;
        &self.k[s..s + self.kv_dim]
    }

    /// Value vector at position `pos` `[kv_dim]`.
    #[inline]
    pub fn value(&self, pos: usize) -> &[f32] {
        let s = self.slot(pos) * self.kv_dim;
        &self.v[s..s + self.kv_dim]
    }

    /// Store key and value rows for position `pos`.
    pub fn store(&mut self, pos: usize, k: &[f32], v: &[f32]) {
        self.reserve(pos + 1);
        let s = self.slot(pos) * self.kv_dim;
        self.k[s..s + self.kv_dim].copy_from_slice(k);
        self.v[s..s + self.kv_dim].copy_from_slice(v);
    }
}

/// The cache of one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One entry per layer.
    pub layers: Vec<LayerCache>,
    len: usize,
}

impl KvCache {
    /// An empty cache shaped for `cfg`.
    pub fn new(cfg: &GemmaConfig) -> Self {
        let layers = cfg
            .layers
            .iter()
            .map(|l| LayerCache {
                k: Vec::new(),
                v: Vec::new(),
                capacity: match l.attention {
                    AttentionKind::Global => usize::MAX,
                    AttentionKind::Sliding { window } => window + MAX_CHUNK,
                },
                window: match l.attention {
                    AttentionKind::Global => 0,
                    AttentionKind::Sliding { window } => window,
                },
                kv_dim: cfg.kv_dim(),
            })
            .collect();
        Self { layers, len: 0 }
    }

    /// Number of positions processed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Advance after a forward over `n` tokens.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Roll back to the first `len` positions, so a new continuation can
    /// reuse a shared prefix. Returns false (and changes nothing) when a
    /// sliding-window ring has already overwritten positions that the
    /// continuation would need.
    pub fn truncate(&mut self, len: usize) -> bool {
        if len >= self.len {
            return len == self.len;
        }
        // Position p is overwritten once p + capacity has been written; after
        // rolling back to `len` a sliding layer needs len-window+1..len-1.
        let ok = self.layers.iter().all(|l| l.capacity == usize::MAX || self.len - len <= l.capacity - l.window);
        if ok {
            self.len = len;
        }
        ok
    }

    /// Forget everything (keeps allocations).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| (l.k.len() + l.v.len()) * 4).sum()
    }
}
