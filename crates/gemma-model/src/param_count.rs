//! Parameter counts and memory from a config alone (no weights): what
//! `gemma inspect --variants` shows for each published size. Mirrors the
//! shapes `Weights::load` reads; a test checks the two agree on every
//! fixture.

use crate::config::GemmaConfig;
use gemma_core::DType;

impl GemmaConfig {
    /// Parameters the checkpoint holds (tied head counted once), as
    /// `Weights::parameter_count` counts them once loaded.
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let untied = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        let mut n = self.vocab_size * h + h + untied;
        let p = self.per_layer_input_size;
        for (l, s) in self.layers.iter().enumerate() {
            let (q, kv, ff, hd) = (self.layer_q_dim(l), self.layer_kv_dim(l), s.intermediate_size, s.head_dim);
            let own_kv = s.kv_source.is_none();
            n += 2 * h + 2 * q * h + 3 * ff * h;
            if own_kv {
                n += kv * h * if s.k_eq_v { 1 } else { 2 };
            }
            if self.sandwich_norms {
                n += 2 * h;
            }
            if self.qk_norm {
                n += hd + if own_kv { hd } else { 0 };
            }
            n += usize::from(self.layer_scalar);
            if p > 0 {
                n += 2 * p * h + h;
            }
            if let Some(m) = self.moe {
                n += m.experts * h + h + m.experts + 3 * h + m.experts * 3 * m.intermediate_size * h;
            }
            if let Some(a) = self.altup {
                let st = a.streams;
                n += h + st * st + st * st * st + st * h + h;
            }
            if self.laurel_rank > 0 {
                n += 2 * self.laurel_rank * h + h;
            }
        }
        if p > 0 {
            let lp = self.num_layers() * p;
            n += self.per_layer_vocab_size * lp + lp * h + p;
        }
        if let Some(a) = self.altup {
            n += 2 * a.streams.saturating_sub(1) * h * h;
        }
        n
    }

    /// Approximate bytes of the weights with every parameter stored as
    /// `dtype` (norms are really f32: a rounding error at these sizes).
    pub fn weight_bytes(&self, dtype: DType) -> u64 {
        dtype.bytes_for(self.parameter_count()) as u64
    }
}
