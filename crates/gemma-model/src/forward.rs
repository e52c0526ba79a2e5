//! The one forward pass for every Gemma generation. Variants are data in
//! [`GemmaConfig`]/[`LayerSpec`]; weight dtypes are handled by the kernels.

use crate::attention::{attention, AttnShape};
use crate::cache::{KvCache, LayerCache};
use crate::config::{AttentionKind, GemmaConfig};
use crate::weights::{LayerWeights, Weights};
use gemma_core::{GemmaError, Result};
use gemma_kernels::{add_in_place, matmul, ops::rms_norm_in_place, rms_norm, rope, rope_inv_freq, softcap};

/// Longest run of tokens processed by one internal forward step. Longer
/// inputs are split; sliding-window caches are sized with this in mind.
pub const MAX_CHUNK: usize = 512;

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token (generation).
    Last,
    /// Every token (scoring, perplexity).
    All,
}

/// A loaded model: config, weights and precomputed RoPE tables.
/// Immutable during inference, so one model serves many caches.
#[derive(Debug)]
pub struct Model {
    /// The parsed config.
    pub config: GemmaConfig,
    /// The weights.
    pub weights: Weights,
    /// Inverse RoPE frequencies per layer `[layers][head_dim/2]`.
    inv_freq: Vec<Vec<f32>>,
    /// Keep the KV cache in f16 (GGUF models, as llama.cpp) instead of f32.
    pub kv_f16: bool,
}

impl Model {
    /// Assemble a model; checks that weights and config agree.
    pub fn new(config: GemmaConfig, weights: Weights) -> Result<Self> {
        if weights.layers.len() != config.num_layers() {
            return Err(GemmaError::config("num_hidden_layers", format!("{} in config, {} in weights", config.num_layers(), weights.layers.len())));
        }
        let inv_freq = config.layers.iter().map(|l| rope_inv_freq(config.head_dim, l.rope_theta, l.rope_linear_factor)).collect();
        Ok(Self { config, weights, inv_freq, kv_f16: false })
    }

    /// A fresh, empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config, self.kv_f16)
    }

    /// Run `tokens` through the model after what `cache` holds, appending to
    /// the cache. Returns logits `[1, vocab]` (Last) or `[tokens, vocab]` (All).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, mode: LogitsMode) -> Result<Vec<f32>> {
        let cfg = &self.config;
        if tokens.is_empty() {
            return Err(GemmaError::invalid("tokens", "forward needs at least one token"));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(GemmaError::InvalidToken { id: bad, vocab_size: cfg.vocab_size });
        }
        let end = cache.len() + tokens.len();
        if end > cfg.max_position_embeddings {
            return Err(GemmaError::invalid(
                "tokens",
                format!("sequence of {end} tokens exceeds the model's context of {} (max_position_embeddings)", cfg.max_position_embeddings),
            ));
        }
        let mut out = Vec::with_capacity(match mode {
            LogitsMode::Last => cfg.vocab_size,
            LogitsMode::All => cfg.vocab_size * tokens.len(),
        });
        let chunks: Vec<&[u32]> = tokens.chunks(MAX_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let want = match mode {
                LogitsMode::All => true,
                LogitsMode::Last => i + 1 == chunks.len(),
            };
            let x = self.forward_chunk(chunk, cache);
            if want {
                let rows = if mode == LogitsMode::All { chunk.len() } else { 1 };
                let start = (chunk.len() - rows) * cfg.hidden_size;
                out.extend(self.logits(&x[start..], rows));
            }
        }
        Ok(out)
    }

    /// Final norm, output head and final softcap for `rows` hidden states.
    fn logits(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let cfg = &self.config;
        let mut h = vec![0.0; rows * cfg.hidden_size];
        rms_norm(x, &self.weights.final_norm, cfg.rms_norm_eps, &mut h);
        let mut logits = vec![0.0; rows * cfg.vocab_size];
        matmul(&h, rows, self.weights.head(), &mut logits);
        if let Some(cap) = cfg.final_softcap {
            softcap(&mut logits, cap);
        }
        logits
    }

    /// All blocks over one chunk; returns the residual stream `[n, hidden]`.
    fn forward_chunk(&self, tokens: &[u32], cache: &mut KvCache) -> Vec<f32> {
        let cfg = &self.config;
        let (n, hidden) = (tokens.len(), cfg.hidden_size);
        let start = cache.len();
        // x: [n, hidden]
        let mut x = vec![0.0; n * hidden];
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &mut x[t * hidden..(t + 1) * hidden];
            gemma_quant::read_f32(&self.weights.embed.storage, tok as usize * hidden, row);
            row.iter_mut().for_each(|v| *v *= cfg.embed_scale);
        }
        for (l, lw) in self.weights.layers.iter().enumerate() {
            self.block(l, lw, &mut x, n, start, &mut cache.layers[l]);
        }
        cache.advance(n);
        x
    }

    /// One transformer block, in place on `x` `[n, hidden]`.
    fn block(&self, l: usize, w: &LayerWeights, x: &mut [f32], n: usize, start: usize, kv: &mut LayerCache) {
        let cfg = &self.config;
        let (hidden, hd, qd, kvd) = (cfg.hidden_size, cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps;

        // Attention.
        let mut h = vec![0.0; n * hidden];
        rms_norm(x, &w.attn_norm, eps, &mut h);
        let mut q = vec![0.0; n * qd]; // [n, heads*hd]
        let mut k = vec![0.0; n * kvd]; // [n, kv_heads*hd]
        let mut v = vec![0.0; n * kvd];
        matmul(&h, n, &w.q, &mut q);
        matmul(&h, n, &w.k, &mut k);
        matmul(&h, n, &w.v, &mut v);
        if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
            rms_norm_in_place(&mut q, qn, eps);
            rms_norm_in_place(&mut k, kn, eps);
        }
        let inv_freq = &self.inv_freq[l];
        for t in 0..n {
            for head in q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                rope(head, start + t, inv_freq);
            }
            for head in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd) {
                rope(head, start + t, inv_freq);
            }
            kv.store(start + t, &k[t * kvd..(t + 1) * kvd], &v[t * kvd..(t + 1) * kvd]);
        }
        let mut att = vec![0.0; n * qd]; // [n, heads*hd]
        self.attention(l, &q, kv, start, &mut att);
        let mut a = vec![0.0; n * hidden];
        matmul(&att, n, &w.o, &mut a);
        if let Some(g) = &w.post_attn_norm {
            rms_norm_in_place(&mut a, g, eps);
        }
        add_in_place(x, &a);

        // Feed-forward (GeGLU).
        rms_norm(x, &w.ffn_norm, eps, &mut h);
        let ff = cfg.intermediate_size;
        let mut gate = vec![0.0; n * ff];
        let mut up = vec![0.0; n * ff];
        matmul(&h, n, &w.gate, &mut gate);
        matmul(&h, n, &w.up, &mut up);
        gemma_kernels::geglu::geglu(&mut gate, &up);
        matmul(&gate, n, &w.down, &mut a);
        if let Some(g) = &w.post_ffn_norm {
            rms_norm_in_place(&mut a, g, eps);
        }
        add_in_place(x, &a);
    }

    /// Scaled dot-product attention of queries `q` `[n, heads*hd]` at
    /// positions `start..start+n` over the cache, into `out` `[n, heads*hd]`.
    fn attention(&self, l: usize, q: &[f32], kv: &LayerCache, start: usize, out: &mut [f32]) {
        let cfg = &self.config;
        let shape = AttnShape {
            heads: cfg.num_heads,
            group: cfg.num_heads / cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            window: match cfg.layers[l].attention {
                AttentionKind::Global => usize::MAX,
                AttentionKind::Sliding { window } => window,
            },
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
        };
        attention(shape, q, kv, start, out);
    }
}
