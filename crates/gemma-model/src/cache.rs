//! The KV cache. Global layers keep every position; sliding-window layers keep
//! a ring of `window + MAX_CHUNK` positions, so memory stays bounded however
//! long the sequence grows.

use crate::config::{AttentionKind, GemmaConfig};
use crate::forward::MAX_CHUNK;
use gemma_kernels::dot::{axpy_f16, axpy_f32, dot_f16, dot_f32};
use half::f16;

/// Element storage of a layer's keys and values.
#[derive(Debug, Clone)]
pub enum KvStore {
    /// Full precision.
    F32(Vec<f32>),
    /// Half the memory and bandwidth; llama.cpp's default.
    F16(Vec<f16>),
}

impl KvStore {
    fn len(&self) -> usize {
        match self {
            KvStore::F32(v) => v.len(),
            KvStore::F16(v) => v.len(),
        }
    }

    fn resize(&mut self, n: usize) {
        match self {
            KvStore::F32(v) => v.resize(n, 0.0),
            KvStore::F16(v) => v.resize(n, f16::ZERO),
        }
    }

    fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            KvStore::F32(v) => v[at..at + x.len()].copy_from_slice(x),
            KvStore::F16(v) => v[at..at + x.len()].iter_mut().zip(x).for_each(|(o, &a)| *o = f16::from_f32(a)),
        }
    }

    /// `q · self[at..at+q.len()]`.
    #[inline]
    fn dot(&self, at: usize, q: &[f32]) -> f32 {
        match self {
            KvStore::F32(v) => dot_f32(q, &v[at..at + q.len()]),
            KvStore::F16(v) => dot_f16(q, &v[at..at + q.len()]),
        }
    }

    /// `out += p * self[at..at+out.len()]`.
    #[inline]
    fn axpy(&self, at: usize, p: f32, out: &mut [f32]) {
        let n = out.len();
        match self {
            KvStore::F32(v) => axpy_f32(p, &v[at..at + n], out),
            KvStore::F16(v) => axpy_f16(p, &v[at..at + n], out),
        }
    }

    /// Copy `out.len()` values at `at` into `out` as f32.
    #[inline]
    fn read(&self, at: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            KvStore::F32(v) => out.copy_from_slice(&v[at..at + n]),
            KvStore::F16(v) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[at..at + n], out),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KvStore::F32(v) => v.len() * 4,
            KvStore::F16(v) => v.len() * 2,
        }
    }
}

/// Keys and values of one layer, `[slots, kv_dim]` each. Position `p`
/// lives in slot `p % capacity`.
#[derive(Debug, Clone)]
pub struct LayerCache {
    k: KvStore,
    v: KvStore,
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
    /// Grows in steps of [`GROW_STEP`] positions, so decoding does not
    /// allocate per token.
    fn reserve(&mut self, end: usize) {
        let slots = end.min(self.capacity);
        if self.k.len() < slots * self.kv_dim {
            let slots = slots.next_multiple_of(GROW_STEP).min(self.capacity);
            self.k.resize(slots * self.kv_dim);
            self.v.resize(slots * self.kv_dim);
        }
    }

    /// `q · key[pos][off..off+q.len()]`.
    #[inline]
    pub fn key_dot(&self, pos: usize, off: usize, q: &[f32]) -> f32 {
        self.k.dot(self.slot(pos) * self.kv_dim + off, q)
    }

    /// `out += p * value[pos][off..off+out.len()]`.
    #[inline]
    pub fn value_axpy(&self, pos: usize, off: usize, p: f32, out: &mut [f32]) {
        self.v.axpy(self.slot(pos) * self.kv_dim + off, p, out)
    }

    /// Store key and value rows (`[kv_dim]` each) for position `pos`.
    /// Whether keys and values are stored as f16.
    pub fn is_f16(&self) -> bool {
        matches!(self.k, KvStore::F16(_))
    }

    /// The key of position `pos` at offset `off` (one head: `out.len()` values), as f32.
    #[inline]
    pub fn read_key(&self, pos: usize, off: usize, out: &mut [f32]) {
        self.k.read(self.slot(pos) * self.kv_dim + off, out)
    }

    /// The value of position `pos` at offset `off`, as f32.
    #[inline]
    pub fn read_value(&self, pos: usize, off: usize, out: &mut [f32]) {
        self.v.read(self.slot(pos) * self.kv_dim + off, out)
    }

    pub fn store(&mut self, pos: usize, k: &[f32], v: &[f32]) {
        self.reserve(pos + 1);
        let s = self.slot(pos) * self.kv_dim;
        self.k.write(s, k);
        self.v.write(s, v);
    }
}

/// The cache of one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One entry per layer.
    pub layers: Vec<LayerCache>,
    len: usize,
}

/// Positions the cache grows by at a time.
pub const GROW_STEP: usize = 256;

impl KvCache {
    /// An empty cache shaped for `cfg`, keeping keys and values in f16
    /// when `half` is set (else f32).
    pub fn new(cfg: &GemmaConfig, half: bool) -> Self {
        let store = || if half { KvStore::F16(Vec::new()) } else { KvStore::F32(Vec::new()) };
        let layers = cfg
            .layers
            .iter()
            .map(|l| LayerCache {
                // (A Gemma 4 layer sharing another's keys and values never stores any.)
                k: store(),
                v: store(),
                capacity: match l.attention {
                    AttentionKind::Global => usize::MAX,
                    AttentionKind::Sliding { window } => window + MAX_CHUNK,
                },
                window: match l.attention {
                    AttentionKind::Global => 0,
                    AttentionKind::Sliding { window } => window,
                },
                kv_dim: l.num_kv_heads * l.head_dim,
            })
            .collect();
        Self { layers, len: 0 }
    }

    /// An f32 cache whose sliding layers never wrap (the window still
    /// masks): for training, where one step may hold a whole sequence.
    pub fn unbounded(cfg: &GemmaConfig) -> Self {
        let mut c = Self::new(cfg, false);
        c.layers.iter_mut().for_each(|l| l.capacity = usize::MAX);
        c
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
        self.layers.iter().map(|l| l.k.bytes() + l.v.bytes()).sum()
    }
}
