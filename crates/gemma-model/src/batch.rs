//! Batched forward for serving: several sequences, each with its own KV
//! cache, advance in one pass, so every weight matrix is read once per step
//! for all of them. Single-token items (decode steps) run through
//! batch-invariant kernels (`matmul_decode`), and attention is per sequence:
//! a sequence's logits are bit-identical whatever else is in the batch.
//! Multi-token items (prefill chunks) are computed as `forward` computes a
//! chunk alone. An item may ask for the logits of every row (prompt
//! scoring); those are computed a few rows at a time and handed to a
//! callback, never held for a whole chunk (`rows × vocab` floats).

use crate::cache::KvCache;
use crate::lora::LoraAdapter;
use crate::workspace::{buf, Workspace};
use crate::forward::{Media, Model, Seg};
use gemma_core::{GemmaError, Result};
use gemma_kernels::{matmul, matmul_decode, ops::rms_norm, softcap};

/// Rows of scored logits computed at once (`SCORE_ROWS × vocab` floats).
const SCORE_ROWS: usize = 16;

/// One sequence's step in a batch.
#[derive(Debug)]
pub struct BatchItem<'a> {
    /// New tokens (one for a decode step, a chunk of prompt for prefill).
    pub tokens: &'a [u32],
    /// The sequence's cache, appended to.
    pub cache: &'a mut KvCache,
    /// Hand the logits of rows `r..` (of this item's tokens) to the
    /// scoring callback (None: no scoring).
    pub score_from: Option<usize>,
    /// Whether the caller needs the logits of the last token (false for a
    /// prompt chunk that is not the last, or a prompt that is only scored:
    /// its row of the result is then NaN and costs no output-head product).
    pub last_logits: bool,
    /// This sequence's own LoRA adapter (per request), on top of the
    /// model's `lora` if any.
    pub adapter: Option<&'a LoraAdapter>,
    /// Verify a draft: every token is a decode row (computed exactly as
    /// decoding them one at a time would), and the logits of every row go
    /// to the scoring callback, in order, from the decode product (the
    /// item's `score_from` must be None). See `Model::forward_verify`.
    pub verify: bool,
    /// The sequence's media runs (positions from its start; `&[]`: none).
    /// Runs inside `tokens` replace their embeddings; a run must lie wholly
    /// inside the step or wholly outside it (see `chunk_end`).
    pub media: &'a [Media<'a>],
}

/// Reusable buffers of batched forwards (one per engine).
#[derive(Debug, Default)]
pub struct BatchWorkspace {
    sc: Workspace,
    /// Per item, the final-normed hidden states of the rows whose logits
    /// the last step gave: a verify item's rows, else its last row.
    kept: Vec<Vec<f32>>,
}

/// What a batched step gives: [`Model::forward_batch_scored`]'s logits,
/// and per item the final-normed hidden states `[rows, hidden]` behind its
/// logits (a verify item's rows in order, else its last row; empty when
/// it had none): what Gemma 4's MTP assistants draft from.
#[derive(Debug)]
pub struct BatchOut<'w> {
    /// `[items, vocab]`, as [`Model::forward_batch`] returns them.
    pub logits: &'w mut [f32],
    /// Per item, `[rows, hidden]`.
    pub hidden: &'w [Vec<f32>],
}

impl Model {
    /// Advance every item by its tokens; returns the logits of each item's
    /// last token, `[items, vocab]`, in item order. Nothing is changed when
    /// an item is invalid (empty, unknown ids, longer than the step limit,
    /// context overflow).
    pub fn forward_batch<'w>(&self, items: &mut [BatchItem], ws: &'w mut BatchWorkspace) -> Result<&'w mut [f32]> {
        self.forward_batch_scored(items, ws, &mut |_, _, _| {})
    }

    /// As [`Model::forward_batch`], and for each item with `score_from` set
    /// to `Some(r0)`, `on_row(item, row, logits)` receives the logits
    /// (`[vocab]`) of its rows `r0..` in order (row `r` predicts the token
    /// after `tokens[r]`). Rows before `r0` cost no output-head product.
    pub fn forward_batch_scored<'w>(
        &self,
        items: &mut [BatchItem],
        ws: &'w mut BatchWorkspace,
        on_row: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Result<&'w mut [f32]> {
        self.forward_batch_out(items, ws, on_row).map(|o| o.logits)
    }

    /// As [`Model::forward_batch_scored`], with the hidden states behind
    /// the logits ([`BatchOut`]).
    pub fn forward_batch_out<'w>(
        &self,
        items: &mut [BatchItem],
        ws: &'w mut BatchWorkspace,
        on_row: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Result<BatchOut<'w>> {
        let limit = self.config.step_limit();
        for it in items.iter() {
            if it.tokens.len() > limit {
                // Sliding-window rings hold window + step_limit positions: a longer
                // step would overwrite keys its own first queries still need.
                return Err(GemmaError::invalid("tokens", format!("a batch item of {} tokens is longer than the {limit} one step takes", it.tokens.len())));
            }
            self.check_tokens(it.tokens, it.cache.len())?;
            if it.verify && it.score_from.is_some() {
                return Err(GemmaError::invalid("verify", "a verify step hands every row to the callback already: it takes no score_from"));
            }
        }
        // Each item's runs inside this step (checked before anything changes).
        let hidden = self.config.hidden_size;
        let mut inside: Vec<Vec<Media>> = Vec::with_capacity(items.len());
        for it in items.iter() {
            let (a, b) = (it.cache.len(), it.cache.len() + it.tokens.len());
            let mut these = Vec::new();
            for m in it.media {
                let end = m.at + m.rows.len() / hidden;
                if m.at >= a && end <= b {
                    these.push(*m);
                } else if m.at < b && end > a {
                    return Err(GemmaError::invalid("media", format!("the run at {}..{end} is split by the step {a}..{b}", m.at)));
                }
            }
            self.media_spans(&these, a, b - a)?;
            inside.push(these);
        }
        let cfg = &self.config;
        let (hidden, vocab) = (cfg.hidden_size, cfg.vocab_size);
        // Decode rows first (single tokens and verify steps, one row each),
        // then each prefill chunk.
        let decodes = |i: &usize| items[*i].tokens.len() == 1 || items[*i].verify;
        let mut order: Vec<usize> = (0..items.len()).filter(decodes).collect();
        order.extend((0..items.len()).filter(|i| !decodes(i)));
        let mut segs = Vec::with_capacity(items.len());
        let mut row0 = 0;
        for &i in &order {
            let (n, start) = (items[i].tokens.len(), items[i].cache.len());
            if items[i].verify {
                for t in 0..n {
                    segs.push(Seg { row0: row0 + t, n: 1, start: start + t, item: i, decode: true, adapter: items[i].adapter, exact: false, media: &inside[i] });
                }
            } else {
                segs.push(Seg { row0, n, start, item: i, decode: n == 1, adapter: items[i].adapter, exact: false, media: &inside[i] });
            }
            row0 += n;
        }
        let scored: Vec<Option<usize>> = items.iter().map(|it| it.score_from).collect();
        let verifying: Vec<bool> = items.iter().map(|it| it.verify).collect();
        let pairs_len: Vec<usize> = items.iter().map(|it| it.tokens.len()).collect();
        let wants_last: Vec<bool> = items.iter().map(|it| it.last_logits).collect();
        let mut pairs: Vec<(&[u32], &mut KvCache)> = items.iter_mut().map(|it| (it.tokens, &mut *it.cache)).collect();
        let BatchWorkspace { sc, kept } = ws;
        kept.resize_with(pairs.len(), Vec::new);
        kept.iter_mut().for_each(Vec::clear);
        self.run_segments(&segs, &mut pairs, sc, None);
        // Verify rows, from the decode product, a few at a time.
        for &i in order.iter().filter(|&&i| verifying[i]) {
            let first = segs.iter().find(|s| s.item == i).map_or(0, |s| s.row0);
            let n = pairs_len[i];
            for r0 in (0..n).step_by(SCORE_ROWS) {
                let rows = SCORE_ROWS.min(n - r0);
                for (k, row) in self.head_rows(sc, first + r0, rows, true).chunks_exact(vocab).enumerate() {
                    on_row(i, r0 + k, row);
                }
                kept[i].extend_from_slice(&sc.h[..rows * hidden]);
            }
        }
        // Scored rows, a few at a time.
        for s in segs.iter() {
            let Some(first) = scored[s.item] else { continue };
            for r0 in (first.min(s.n)..s.n).step_by(SCORE_ROWS) {
                let rows = SCORE_ROWS.min(s.n - r0);
                for (i, row) in self.head_rows(sc, s.row0 + r0, rows, false).chunks_exact(vocab).enumerate() {
                    on_row(s.item, r0 + i, row);
                }
            }
        }
        // The last row of each item that wants it, packed in item order; the
        // decode product is batch-invariant, so leaving items out changes no
        // other row.
        let mut want: Vec<(usize, usize)> = segs.iter().filter(|s| wants_last[s.item]).map(|s| (s.item, s.row0 + s.n - 1)).collect();
        want.sort_unstable();
        // (A verify item's rows are several segments: its last row only.)
        want.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = earlier.1.max(later.1);
            }
            same
        });
        let m = want.len();
        let last = buf(&mut sc.att, m * hidden);
        for (k, &(_, r)) in want.iter().enumerate() {
            last[k * hidden..(k + 1) * hidden].copy_from_slice(&sc.x[r * hidden..(r + 1) * hidden]);
        }
        let logits = buf(&mut sc.logits, items.len() * vocab);
        if m > 0 {
            let h = buf(&mut sc.h, m * hidden);
            rms_norm(last, &self.weights.final_norm, cfg.rms_norm_eps, h);
            for (k, &(item, _)) in want.iter().enumerate() {
                kept[item].extend_from_slice(&h[k * hidden..(k + 1) * hidden]);
            }
            matmul_decode(h, m, self.weights.head(), &mut logits[..m * vocab]);
            if let Some(cap) = cfg.final_softcap {
                softcap(&mut logits[..m * vocab], cap);
            }
        }
        // Spread to item order, back to front (an item's slot is never before its packed row).
        let mut slot = items.len();
        for (k, &(item, _)) in want.iter().enumerate().rev() {
            for skipped in item + 1..slot {
                logits[skipped * vocab..(skipped + 1) * vocab].fill(f32::NAN);
            }
            logits.copy_within(k * vocab..(k + 1) * vocab, item * vocab);
            slot = item;
        }
        for skipped in 0..slot {
            logits[skipped * vocab..(skipped + 1) * vocab].fill(f32::NAN);
        }
        Ok(BatchOut { logits, hidden: kept })
    }
}

impl Model {
    /// The logits `[rows, vocab]` of residual rows `first..first + rows`:
    /// final norm, output head (the batch-invariant decode product with
    /// `decode`, else the prefill product), final softcap.
    pub(crate) fn head_rows<'s>(&self, sc: &'s mut Workspace, first: usize, rows: usize, decode: bool) -> &'s [f32] {
        let cfg = &self.config;
        let (hidden, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let x = &sc.x[first * hidden..(first + rows) * hidden];
        let h = buf(&mut sc.h, rows * hidden);
        rms_norm(x, &self.weights.final_norm, cfg.rms_norm_eps, h);
        let logits = buf(&mut sc.logits, rows * vocab);
        if decode {
            matmul_decode(h, rows, self.weights.head(), logits);
        } else {
            matmul(h, rows, self.weights.head(), logits);
        }
        if let Some(cap) = cfg.final_softcap {
            softcap(logits, cap);
        }
        logits
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
            let mut tok = argmax(model.forward_batch(&mut [BatchItem { tokens: p, cache: &mut c, score_from: None, last_logits: true, adapter: None, verify: false, media: &[] }], &mut ws).unwrap());
            let mut steps = Vec::new();
            for _ in 0..5 {
                let l = model.forward_batch(&mut [BatchItem { tokens: &[tok], cache: &mut c, score_from: None, last_logits: true, adapter: None, verify: false, media: &[] }], &mut ws).unwrap().to_vec();
                tok = argmax(&l);
                steps.push(l);
            }
            alone.push(steps);
        }
        // Together: prefill chunk of the third prompt joins decode steps of the others.
        let mut caches: Vec<_> = prompts.iter().map(|_| model.new_cache()).collect();
        let mut toks = Vec::new();
        for (p, c) in prompts.iter().zip(caches.iter_mut()).take(2) {
            toks.push(argmax(model.forward_batch(&mut [BatchItem { tokens: p, cache: c, score_from: None, last_logits: true, adapter: None, verify: false, media: &[] }], &mut ws).unwrap()));
        }
        let (a, rest) = caches.split_at_mut(1);
        let (b, c) = rest.split_at_mut(1);
        let t = toks.clone();
        let l = model
            .forward_batch(
                &mut [
                    BatchItem { tokens: &[t[0]], cache: &mut a[0], score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
                    BatchItem { tokens: prompts[2], cache: &mut c[0], score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
                    BatchItem { tokens: &[t[1]], cache: &mut b[0], score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
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

    /// Scored rows equal `forward`'s logits of every position; an item
    /// longer than one step takes is refused before anything changes.
    #[test]
    fn scored_rows_equal_forward_all_and_long_items_are_refused() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3");
        let model = hf::load_model(&dir, None, &mut |_, _| {}).unwrap();
        let vocab = model.config.vocab_size;
        let prompt: Vec<u32> = (0..40).map(|i| 2 + (i * 7) % 50).collect();
        let want = model.forward(&prompt, &mut model.new_cache(), LogitsMode::All).unwrap();
        let mut ws = BatchWorkspace::default();
        let (mut c, mut other) = (model.new_cache(), model.new_cache());
        let mut got = vec![f32::NAN; prompt.len() * vocab];
        let mut seen = 0;
        model
            .forward_batch_scored(
                &mut [BatchItem { tokens: &[2], cache: &mut other, score_from: None, last_logits: true, adapter: None, verify: false, media: &[] }, BatchItem { tokens: &prompt, cache: &mut c, score_from: Some(0), last_logits: true, adapter: None, verify: false, media: &[] }],
                &mut ws,
                &mut |item, row, l| {
                    assert_eq!(item, 1);
                    got[row * vocab..(row + 1) * vocab].copy_from_slice(l);
                    seen += 1;
                },
            )
            .unwrap();
        assert_eq!(seen, prompt.len());
        let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "scored rows vs forward(All): {d}");
        // Leaving an item's last logits out changes no other item's row.
        let both = model
            .forward_batch(
                &mut [
                    BatchItem { tokens: &[2, 7, 9], cache: &mut model.new_cache(), score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
                    BatchItem { tokens: &[3], cache: &mut model.new_cache(), score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
                    BatchItem { tokens: &[4, 5], cache: &mut model.new_cache(), score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
                ],
                &mut ws,
            )
            .unwrap()
            .to_vec();
        let some = model
            .forward_batch(
                &mut [
                    BatchItem { tokens: &[2, 7, 9], cache: &mut model.new_cache(), score_from: None, last_logits: false, adapter: None, verify: false, media: &[] },
                    BatchItem { tokens: &[3], cache: &mut model.new_cache(), score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
                    BatchItem { tokens: &[4, 5], cache: &mut model.new_cache(), score_from: None, last_logits: false, adapter: None, verify: false, media: &[] },
                ],
                &mut ws,
            )
            .unwrap()
            .to_vec();
        assert_eq!(&some[vocab..2 * vocab], &both[vocab..2 * vocab]);
        assert!(some[..vocab].iter().chain(&some[2 * vocab..]).all(|x| x.is_nan()));
        // Scoring from row 30 hands over rows 30.. only, with the same values.
        let mut rows = Vec::new();
        model
            .forward_batch_scored(&mut [BatchItem { tokens: &prompt, cache: &mut model.new_cache(), score_from: Some(30), last_logits: true, adapter: None, verify: false, media: &[] }], &mut ws, &mut |_, row, l| {
                assert_eq!(l, &got[row * vocab..(row + 1) * vocab]);
                rows.push(row);
            })
            .unwrap();
        assert_eq!(rows, (30..prompt.len()).collect::<Vec<_>>());
        let long = vec![2u32; crate::forward::MAX_CHUNK + 1];
        let mut fresh = model.new_cache();
        let e = model.forward_batch(&mut [BatchItem { tokens: &long, cache: &mut fresh, score_from: None, last_logits: true, adapter: None, verify: false, media: &[] }], &mut ws).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        assert_eq!(fresh.len(), 0);
    }

    fn argmax(l: &[f32]) -> u32 {
        l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
    }
}
