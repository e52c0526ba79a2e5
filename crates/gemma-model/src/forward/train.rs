//! The training forward: the same blocks as inference ([`Model::forward`]),
//! run over several whole sequences at once with each block recording what
//! its backward needs into a [`Tape`] (llm.c's activation tensors). Rows are
//! the tokens of all sequences one after another; attention never crosses a
//! sequence (each has its own cache, so packing needs no mask).

use super::{Model, Seg};
use crate::attention::AttnShape;
use crate::cache::KvCache;
use crate::lora::LoraAdapter;
use crate::tape::{record, LayerTape, Tape};
use crate::workspace::Workspace;
use gemma_core::{GemmaError, Result};

impl Model {
    /// The training forward over whole sequences `seqs` (each from position
    /// 0, attention within each only), through the same blocks as inference,
    /// recording into `tape`; the final residual stream is `tape.x_out`.
    /// `adapter` (the one being trained) rides on the sequences as a
    /// per-request adapter does, so the model itself is not changed: one
    /// model can serve and train at once. Training always runs the reference
    /// numerics (f32 activations, exact GELU and RoPE angles), except that
    /// bf16 weights on AMX-BF16 or AVX512-BF16 meet bf16-rounded
    /// activations, as in inference's prefill and PyTorch's bf16 layers
    /// (`matmul_train`).
    pub fn forward_train(&self, seqs: &[&[u32]], tape: &mut Tape, adapter: Option<&LoraAdapter>) -> Result<()> {
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
            segs.push(Seg { row0, n: s.len(), start: 0, item: i, decode: false, adapter, exact: true, media: &[] });
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
        if self.weights.ple.is_some() {
            record(&mut tape.ple, &sc.ple[..row0 * cfg.num_layers() * cfg.per_layer_input_size]);
        }
        Ok(())
    }

    /// Gradient checkpointing: run block `l` again from its recorded input
    /// (same sequences, same dropout masks), recording everything its
    /// backward needs. The result is bit for bit what a full recording holds.
    pub fn recompute_layer(&self, l: usize, seqs: &[&[u32]], tape: &mut Tape, adapter: Option<&LoraAdapter>) -> Result<()> {
        let cfg = &self.config;
        let (mut caches, mut segs) = (Vec::with_capacity(seqs.len()), Vec::with_capacity(seqs.len()));
        let mut row0 = 0;
        for (i, s) in seqs.iter().enumerate() {
            caches.push(KvCache::unbounded(cfg));
            segs.push(Seg { row0, n: s.len(), start: 0, item: i, decode: false, adapter, exact: true, media: &[] });
            row0 += s.len();
        }
        let hidden = cfg.hidden_size;
        if tape.layers.len() <= l || tape.layers[l].x_in.len() != row0 * hidden {
            return Err(GemmaError::invalid("tape", format!("layer {l} has no recorded input for these sequences")));
        }
        // A KV-sharing layer reads its source layer's keys and values (kept
        // by the forward for this): into the caches as the forward stored them.
        if let Some(src) = cfg.layers[l].kv_source {
            let (kvd, st) = (cfg.layer_kv_dim(src), &tape.layers[src]);
            if st.k.len() != row0 * kvd || st.v.len() != row0 * kvd {
                return Err(GemmaError::invalid("tape", format!("layer {src}'s keys and values were not kept for layer {l}")));
            }
            for (cache, seg) in caches.iter_mut().zip(&segs) {
                for p in 0..seg.n {
                    let r = (seg.row0 + p) * kvd..(seg.row0 + p + 1) * kvd;
                    cache.layers[src].store(p, &st.k[r.clone()], &st.v[r]);
                }
            }
        }
        let mut items: Vec<(&[u32], &mut KvCache)> = seqs.iter().copied().zip(caches.iter_mut()).collect();
        let mut sc = Workspace::default();
        record(&mut sc.x, &tape.layers[l].x_in);
        record(&mut sc.ple, &tape.ple);
        if cfg.altup.is_some() {
            // Gemma 3n: the block predicts its input from the streams.
            record(&mut sc.streams, &tape.layers[l].streams_in);
        }
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
