//! The KV cache. Global layers keep every position; sliding-window layers keep
//! a ring of `window + step_limit` positions (`MAX_CHUNK`, or the longest
//! media run if longer), so memory stays bounded however
//! long the sequence grows.

use crate::config::{AttentionKind, GemmaConfig};
use gemma_core::DType;
use gemma_kernels::dot::{axpy_f16, axpy_f32, dot_f16, dot_f32};
use half::f16;
use std::cell::RefCell;

/// Longest run of tokens processed by one internal forward step. Longer
/// inputs are split; sliding-window caches are sized with this in mind.
pub const MAX_CHUNK: usize = 512;

/// How a cache stores keys and values (`--kv-type`, llama.cpp's `-ctk/-ctv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    /// 4 bytes per value.
    F32,
    /// 2 bytes per value (llama.cpp's default).
    F16,
    /// 34 bytes per 32 values (8-bit levels, one f16 scale per block), as
    /// llama.cpp's q8_0 cache: about half of f16. Needs head dims that are
    /// multiples of 32.
    Q8_0,
}

impl KvType {
    /// Parse `f32`, `f16` or `q8_0`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(KvType::F32),
            "f16" => Some(KvType::F16),
            "q8_0" => Some(KvType::Q8_0),
            _ => None,
        }
    }

    /// Whether a model with these layers can use it.
    pub fn check(self, cfg: &GemmaConfig) -> gemma_core::Result<()> {
        if self == KvType::Q8_0 {
            if let Some(l) = cfg.layers.iter().find(|l| !l.head_dim.is_multiple_of(32)) {
                return Err(gemma_core::GemmaError::invalid("kv-type", format!("q8_0 needs head dims that are multiples of 32; this model has {}", l.head_dim)));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        })
    }
}

/// Element storage of a layer's keys and values.
#[derive(Debug, Clone)]
pub enum KvStore {
    /// Full precision.
    F32(Vec<f32>),
    /// Half the memory and bandwidth; llama.cpp's default.
    F16(Vec<f16>),
    /// Q8_0 blocks (34 bytes per 32 values, in element order).
    Q8(Vec<u8>),
}

/// Q8_0: values per block and bytes per block.
const Q8_BLOCK: (usize, usize) = (32, 34);

thread_local! {
    /// Quantized row being stored, and a dequantized block run being read.
    static Q8_SCRATCH: RefCell<(Vec<u8>, Vec<f32>)> = RefCell::new(Default::default());
}

/// Byte range of the Q8_0 blocks holding values `at..at + n` (block-aligned).
fn q8_bytes(at: usize, n: usize) -> std::ops::Range<usize> {
    debug_assert!(at.is_multiple_of(Q8_BLOCK.0) && n.is_multiple_of(Q8_BLOCK.0), "q8_0 cache access off a block boundary");
    at / Q8_BLOCK.0 * Q8_BLOCK.1..(at + n) / Q8_BLOCK.0 * Q8_BLOCK.1
}

impl KvStore {
    fn new(kind: KvType) -> Self {
        match kind {
            KvType::F32 => KvStore::F32(Vec::new()),
            KvType::F16 => KvStore::F16(Vec::new()),
            KvType::Q8_0 => KvStore::Q8(Vec::new()),
        }
    }

    /// Values held.
    fn len(&self) -> usize {
        match self {
            KvStore::F32(v) => v.len(),
            KvStore::F16(v) => v.len(),
            KvStore::Q8(v) => v.len() / Q8_BLOCK.1 * Q8_BLOCK.0,
        }
    }

    fn resize(&mut self, n: usize) {
        match self {
            KvStore::F32(v) => v.resize(n, 0.0),
            KvStore::F16(v) => v.resize(n, f16::ZERO),
            KvStore::Q8(v) => v.resize(n.div_ceil(Q8_BLOCK.0) * Q8_BLOCK.1, 0),
        }
    }

    fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            KvStore::F32(v) => v[at..at + x.len()].copy_from_slice(x),
            KvStore::F16(v) => v[at..at + x.len()].iter_mut().zip(x).for_each(|(o, &a)| *o = f16::from_f32(a)),
            KvStore::Q8(v) => Q8_SCRATCH.with(|b| {
                let q = &mut b.borrow_mut().0;
                q.clear();
                // Row lengths are whole blocks (KvType::check refused the
                // models where they are not): never store a row silently dropped.
                gemma_quant::quantize(DType::Q8_0, x, q).expect("q8_0 KV rows are whole Q8_0 blocks (KvType::check)");
                v[q8_bytes(at, x.len())].copy_from_slice(q);
            }),
        }
    }

    /// `q · self[at..at+q.len()]`.
    #[inline]
    fn dot(&self, at: usize, q: &[f32]) -> f32 {
        match self {
            KvStore::F32(v) => dot_f32(q, &v[at..at + q.len()]),
            KvStore::F16(v) => dot_f16(q, &v[at..at + q.len()]),
            KvStore::Q8(_) => Q8_SCRATCH.with(|b| {
                let f = &mut b.borrow_mut().1;
                f.resize(q.len(), 0.0);
                self.read(at, f);
                dot_f32(q, f)
            }),
        }
    }

    /// `out += p * self[at..at+out.len()]`.
    #[inline]
    fn axpy(&self, at: usize, p: f32, out: &mut [f32]) {
        let n = out.len();
        match self {
            KvStore::F32(v) => axpy_f32(p, &v[at..at + n], out),
            KvStore::F16(v) => axpy_f16(p, &v[at..at + n], out),
            KvStore::Q8(_) => Q8_SCRATCH.with(|b| {
                let f = &mut b.borrow_mut().1;
                f.resize(n, 0.0);
                self.read(at, f);
                axpy_f32(p, f, out)
            }),
        }
    }

    /// Copy `out.len()` values at `at` into `out` as f32.
    #[inline]
    fn read(&self, at: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            KvStore::F32(v) => out.copy_from_slice(&v[at..at + n]),
            KvStore::F16(v) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[at..at + n], out),
            KvStore::Q8(v) => gemma_quant::dequantize(DType::Q8_0, &v[q8_bytes(at, n)], out),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KvStore::F32(v) => v.len() * 4,
            KvStore::F16(v) => v.len() * 2,
            KvStore::Q8(v) => v.len(),
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
        Self::with_type(cfg, if half { KvType::F16 } else { KvType::F32 })
    }

    /// An empty cache shaped for `cfg` storing keys and values as `kind`
    /// (which [`KvType::check`] accepted for `cfg`).
    pub fn with_type(cfg: &GemmaConfig, kind: KvType) -> Self {
        let store = || KvStore::new(kind);
        let step = cfg.step_limit();
        let layers = cfg
            .layers
            .iter()
            .map(|l| LayerCache {
                // (A Gemma 4 layer sharing another's keys and values never stores any.)
                k: store(),
                v: store(),
                capacity: match l.attention {
                    AttentionKind::Global => usize::MAX,
                    AttentionKind::Sliding { window } => window + step,
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

    /// How many positions [`KvCache::truncate`] can always roll back: the
    /// sliding-window rings' slack (the step limit), unlimited without them.
    pub fn max_rollback(&self) -> usize {
        self.layers.iter().filter(|l| l.capacity != usize::MAX).map(|l| l.capacity - l.window).min().unwrap_or(usize::MAX)
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
