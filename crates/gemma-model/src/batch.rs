//! Batched forward for serving: several sequences, each with its own KV
//! cache, advance in one pass, so every weight matrix is read once per step
//! for all of them. Single-token items (decode steps) run through
//! batch-invariant kernels (`matmul_decode`), and attention is per sequence:
//! a sequence's logits are bit-identical whatever else is in the batch.
//! Multi-token items (prefill chunks) are computed as `forward` computes a
//! chunk alone.

use crate::cache::{buf, KvCache, Scratch};
use crate::forward::{Model, Seg};
use gemma_core::Result;
use gemma_kernels::{matmul_decode, ops::rms_norm, softcap};

/// One sequence's step in a batch.
#[derive(Debug)]
pub struct BatchItem<'a> {
    /// New tokens (one for a decode step, a chunk of prompt for prefill).
    pub tokens: &'a [u32],
    /// The sequence's cache, appended to.
    pub cache: &'a mut KvCache,
}

/// Reusable buffers of batched forwards (one per engine).
#[derive(Debug, Default)]
pub struct BatchWorkspace {
    sc: Scratch,
}

impl Model {
    /// Advance every item by its tokens; returns the logits of each item's
    /// last token, `[items, vocab]`, in item order. Nothing is changed when
    /// an item is invalid (empty, unknown ids, context overflow).
    pub fn forward_batch<'w>(&self, items: &mut [BatchItem], ws: &'w mut BatchWorkspace) -> Result<&'w mut [f32]> {
        for it in items.iter() {
            self.check_tokens(it.tokens, it.cache.len())?;
        }
        let cfg = &self.config;
        let (hidden, vocab) = (cfg.hidden_size, cfg.vocab_size);
        // Decode rows first, then each prefill chunk.
        let mut order: Vec<usize> = (0..items.len()).filter(|&i| items[i].tokens.len() == 1).collect();
        order.extend((0..items.len()).filter(|&i| items[i].tokens.len() > 1));
        let mut segs = Vec::with_capacity(items.len());
        let mut row0 = 0;
        for &i in &order {
            let n = items[i].tokens.len();
            segs.push(Seg { row0, n, start: items[i].cache.len(), item: i, decode: n == 1 });
            row0 += n;
        }
        let mut pairs: Vec<(&[u32], &mut KvCache)> = items.iter_mut().map(|it| (it.tokens, &mut *it.cache)).collect();
        let sc = &mut ws.sc;
        self.run_segments(&segs, &mut pairs, sc);
        // Each item's last row, in item order.
        let last = buf(&mut sc.att, items.len() * hidden);
        for s in &segs {
            let r = s.row0 + s.n - 1;
            last[s.item * hidden..(s.item + 1) * hidden].copy_from_slice(&sc.x[r * hidden..(r + 1) * hidden]);
        }
        let h = buf(&mut sc.h, items.len() * hidden);
        rms_norm(last, &self.weights.final_norm, cfg.rms_norm_eps, h);
        let logits = buf(&mut sc.logits, items.len() * vocab);
        matmul_decode(h, items.len(), self.weights.head(), logits);
        if let Some(cap) = cfg.final_softcap {
            softcap(logits, cap);
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use crate::hf;
    use crate::{BatchItem, BatchWorkspace, LogitsMode};
    use std::path::PathBuf;

    /// A sequence's logits are the same alone and in any batch, and a
    /// batched prefill chunk equals `forward` of that chunk.
    #[test]
    fn batched_steps_are_batch_invariant() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma2");
        let model = hf::load_model(&dir, None, &mut |_, _| {}).unwrap();
        let prompts: [&[u32]; 3] = [&[2, 10, 11, 12], &[2, 20, 21], &[2, 30, 31, 32, 33, 34]];
        let mut ws = BatchWorkspace::default();
        // Alone: prefill, then 5 decode steps each.
        let mut alone = Vec::new();
        for p in prompts {
            let mut c = model.new_cache();
            let mut tok = argmax(model.forward_batch(&mut [BatchItem { tokens: p, cache: &mut c }], &mut ws).unwrap());
            let mut steps = Vec::new();
            for _ in 0..5 {
                let l = model.forward_batch(&mut [BatchItem { tokens: &[tok], cache: &mut c }], &mut ws).unwrap().to_vec();
                tok = argmax(&l);
                steps.push(l);
            }
            alone.push(steps);
        }
        // Together: prefill chunk of the third prompt joins decode steps of the others.
        let mut caches: Vec<_> = prompts.iter().map(|_| model.new_cache()).collect();
        let mut toks = Vec::new();
        for (p, c) in prompts.iter().zip(caches.iter_mut()).take(2) {
            toks.push(argmax(model.forward_batch(&mut [BatchItem { tokens: p, cache: c }], &mut ws).unwrap()));
        }
        let (a, rest) = caches.split_at_mut(1);
        let (b, c) = rest.split_at_mut(1);
        let t = toks.clone();
        let l = model
            .forward_batch(
                &mut [
                    BatchItem { tokens: &[t[0]], cache: &mut a[0] },
                    BatchItem { tokens: prompts[2], cache: &mut c[0] },
                    BatchItem { tokens: &[t[1]], cache: &mut b[0] },
                ],
                &mut ws,
            )
            .unwrap()
            .to_vec();
        let vocab = model.config.vocab_size;
        assert_eq!(&l[..vocab], &alone[0][0][..], "sequence 0 step 0");
        assert_eq!(&l[2 * vocab..], &alone[1][0][..], "sequence 1 step 0");
        let full = model.forward(prompts[2], &mut model.new_cache(), LogitsMode::Last).unwrap();
        let d: f32 = l[vocab..2 * vocab].iter().zip(&full).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "prefill chunk in a batch vs forward: {d}");
    }

    fn argmax(l: &[f32]) -> u32 {
        l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
    }
}
