//! The one forward pass for every Gemma generation. Variants are data in
//! [`GemmaConfig`]/[`LayerSpec`]; weight dtypes are handled by the kernels.

mod block;
pub(crate) mod gemma3n;
pub(crate) mod gemma4;
mod train;

use crate::attention::AttnShape;
use crate::cache::{KvCache, KvType};
use crate::workspace::{buf, Workspace};
use crate::config::{AttentionKind, GemmaConfig};
use crate::tensors::Proj;
use crate::lora::{dropout_keep, LoraAdapter, LoraPair};
use crate::tape::Tape;
use crate::weights::Weights;
use gemma_core::Matrix;
use gemma_core::{GemmaError, Result};
use gemma_kernels::ops::rope_step_ggml;
use gemma_kernels::{matmul, matmul_decode, rms_norm, rope_inv_freq, softcap};

pub use crate::cache::MAX_CHUNK;

/// Rows `row0..row0+n` of a (batched) forward: new tokens of item `item`,
/// at positions `start..start+n`. `decode` segments hold one token each and
/// come first. `adapter`: the item's own LoRA adapter (per request), on top
/// of the model's `lora` if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg<'a> {
    pub row0: usize,
    pub n: usize,
    pub start: usize,
    pub item: usize,
    pub decode: bool,
    pub adapter: Option<&'a LoraAdapter>,
    /// Part of a training forward: every product multiplies quantized
    /// weights with f32 activations (QLoRA as bitsandbytes computes it: the
    /// dequantized function), the frozen steps of Gemma 3n/4 included.
    pub exact: bool,
    /// Embedding rows in place of some of the item's tokens (images' soft
    /// tokens), each run attending to itself in both directions on the
    /// layers the config's `image_spans` names.
    pub media: &'a [Media<'a>],
}

/// A run of embedding rows that replaces the embeddings of the placeholder
/// tokens at positions `at..at + rows/hidden` of a sequence (an image's soft
/// tokens): within the run, attention goes both ways where the config's
/// `image_spans` says (Gemma 3: every layer; Gemma 4 `"vision"`: the sliding
/// layers; a sliding layer's window still bounds how far back a key may be).
#[derive(Debug, Clone, Copy)]
pub struct Media<'a> {
    /// Position of the first row in the sequence.
    pub at: usize,
    /// `[len, hidden]`.
    pub rows: &'a [f32],
}

/// The tokens of segment `seg` among its item's new tokens (an item may be
/// cut into several segments: a verify step's rows are one decode segment
/// each). Caches advance only after the step, so an item's first new token
/// is at its cache's length.
pub(crate) fn seg_tokens<'t>(seg: &Seg, items: &'t [(&[u32], &mut KvCache)]) -> &'t [u32] {
    let (tokens, cache) = &items[seg.item];
    let off = seg.start - cache.len();
    &tokens[off..off + seg.n]
}

/// Where a prefill chunk that starts at `pos` ends, for a prompt of `len`
/// tokens cut in chunks of `chunk`, when media runs `spans` (`a..b`, sorted)
/// must never be split: the chunk ends before a run it would cut, or after
/// it when the run starts the chunk (so a chunk may be a run longer than
/// `chunk`). Serving and `forward_media` cut prompts the same way.
pub fn chunk_end(pos: usize, len: usize, chunk: usize, spans: &[(usize, usize)]) -> usize {
    let end = (pos + chunk).min(len);
    match spans.iter().find(|&&(a, b)| a < end && end < b) {
        Some(&(a, _)) if a > pos => a,
        Some(&(_, b)) => b,
        None => end,
    }
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token (generation).
    Last,
    /// Every token (scoring, perplexity).
    All,
}

/// How the forward rounds intermediate values. The model is the same; the
/// two differ in the last bits, which is what lets each match its reference
/// token for token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numerics {
    /// As transformers computes in f32 (Hugging Face checkpoints): f32 KV
    /// cache, exact tanh-GELU, RoPE angles `pos · inv_freq`.
    Reference,
    /// As llama.cpp's CPU backend computes (GGUF files): f16 KV cache with the
    /// scaled query and the normalized probabilities rounded to f16, GELU
    /// from ggml's f16 table, RoPE angles by ggml's repeated multiplication.
    LlamaCpp,
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
    pub(crate) inv_freq: Vec<Vec<f32>>,
    /// ggml's RoPE `(step, freq_scale)` per layer (for [`Numerics::LlamaCpp`]).
    rope_ggml: Vec<(f32, f32)>,
    /// Rounding of intermediate values (see [`Numerics`]).
    pub numerics: Numerics,
    /// A LoRA adapter applied on top of the weights, if any.
    pub lora: Option<LoraAdapter>,
    /// How new caches store keys and values (None: f16 with
    /// [`Numerics::LlamaCpp`], else f32); set through [`Model::set_kv_type`].
    kv_type: Option<KvType>,
}

impl Model {
    /// Assemble a model; checks that weights and config agree.
    pub fn new(config: GemmaConfig, weights: Weights) -> Result<Self> {
        if weights.layers.len() != config.num_layers() {
            return Err(GemmaError::config("num_hidden_layers", format!("{} in config, {} in weights", config.num_layers(), weights.layers.len())));
        }
        // Partial RoPE: the pairs past `rope_pairs` get frequency 0 (cos 1, sin 0).
        let inv_freq = config
            .layers
            .iter()
            .map(|l| {
                let mut f = rope_inv_freq(l.head_dim, l.rope_theta, l.rope_linear_factor);
                f.iter_mut().skip(l.rope_pairs()).for_each(|x| *x = 0.0);
                f
            })
            .collect();
        let rope_ggml = config.layers.iter().map(|l| (rope_step_ggml(l.head_dim, l.rope_theta), (1.0 / l.rope_linear_factor) as f32)).collect();
        Ok(Self { config, weights, inv_freq, rope_ggml, numerics: Numerics::Reference, lora: None, kv_type: None })
    }

    /// A fresh, empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::with_type(&self.config, self.kv_type())
    }

    /// How new caches store keys and values.
    pub fn kv_type(&self) -> KvType {
        self.kv_type.unwrap_or(if self.numerics == Numerics::LlamaCpp { KvType::F16 } else { KvType::F32 })
    }

    /// Store keys and values of new caches as `kind`; refused when the
    /// model's head dims do not fit it.
    pub fn set_kv_type(&mut self, kind: KvType) -> Result<()> {
        kind.check(&self.config)?;
        self.kv_type = Some(kind);
        Ok(())
    }

    /// Run `tokens` through the model after what `cache` holds, appending to
    /// the cache. Returns logits `[1, vocab]` (Last) or `[tokens, vocab]` (All).
    /// The activations live in this thread's own [`Workspace`].
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, mode: LogitsMode) -> Result<Vec<f32>> {
        thread_local! {
            static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::new());
        }
        WORKSPACE.with(|ws| Ok(self.forward_into(tokens, cache, &mut ws.borrow_mut(), mode)?.to_vec()))
    }

    /// As [`Model::forward`] with the activations in `ws`, returning the
    /// logits in its buffer (valid until its next use): a decode loop that
    /// keeps its workspace allocates nothing once warmed up.
    pub fn forward_into<'w>(&self, tokens: &[u32], cache: &mut KvCache, ws: &'w mut Workspace, mode: LogitsMode) -> Result<&'w mut [f32]> {
        self.forward_with(tokens, cache, ws, mode, None)
    }

    /// As [`Model::forward_into`] with a per-request LoRA `adapter` on top
    /// of the model's own (`lora`), computed as a batch of requests does.
    pub fn forward_with<'w>(&self, tokens: &[u32], cache: &mut KvCache, ws: &'w mut Workspace, mode: LogitsMode, adapter: Option<&LoraAdapter>) -> Result<&'w mut [f32]> {
        self.forward_media(tokens, &[], cache, ws, mode, adapter)
    }

    /// The final-normed hidden state `[hidden]` after the last of `tokens`
    /// (appended to `cache` as [`Model::forward_with`] does), without the
    /// output head: for a drafter that scores a part of the vocabulary
    /// itself. The head's input for that row, bit for bit.
    pub fn forward_last_hidden<'w>(&self, tokens: &[u32], cache: &mut KvCache, ws: &'w mut Workspace) -> Result<&'w [f32]> {
        let cfg = &self.config;
        if cfg.bidirectional {
            return Err(GemmaError::invalid("model", "this is a bidirectional embedding model: it does not generate"));
        }
        self.check_tokens(tokens, cache.len())?;
        let (mut done, mut last) = (0, 0);
        while done < tokens.len() {
            let end = chunk_end(done, tokens.len(), MAX_CHUNK, &[]);
            self.forward_chunk(&tokens[done..end], &[], cache, ws, None);
            last = end - done - 1;
            done = end;
        }
        let hidden = cfg.hidden_size;
        let h = buf(&mut ws.h, hidden);
        rms_norm(&ws.x[last * hidden..(last + 1) * hidden], &self.weights.final_norm, cfg.rms_norm_eps, h);
        Ok(&ws.h[..hidden])
    }

    /// Logits of every one of `tokens` (`[tokens, vocab]`), each row
    /// computed exactly as decoding the tokens one at a time would compute it
    /// (one decode row per token through the batch-invariant kernels, keys
    /// and values stored before any row attends): what speculative decoding
    /// verifies a draft with, so its greedy output is bit-identical to plain
    /// decoding. Rejected rows are dropped with [`KvCache::truncate`].
    pub fn forward_verify<'w>(&self, tokens: &[u32], cache: &mut KvCache, ws: &'w mut Workspace, adapter: Option<&LoraAdapter>) -> Result<&'w mut [f32]> {
        let cfg = &self.config;
        if cfg.bidirectional {
            return Err(GemmaError::invalid("model", "this is a bidirectional embedding model: it does not generate"));
        }
        if tokens.len() > MAX_CHUNK {
            return Err(GemmaError::invalid("tokens", format!("a verify step of {} tokens is longer than the {MAX_CHUNK} one step takes", tokens.len())));
        }
        self.check_tokens(tokens, cache.len())?;
        let start = cache.len();
        let segs: Vec<Seg> = (0..tokens.len()).map(|i| Seg { row0: i, n: 1, start: start + i, item: 0, decode: true, adapter, exact: false, media: &[] }).collect();
        self.run_segments(&segs, &mut [(tokens, cache)], ws, None);
        self.head_rows(ws, 0, tokens.len(), true);
        Ok(&mut ws.logits[..tokens.len() * cfg.vocab_size])
    }

    /// As [`Model::forward_with`], with `media` rows (an image's soft
    /// tokens) in place of the embeddings of the placeholder tokens they
    /// cover (positions counted from the start of the sequence, within the
    /// new tokens). A run is never split between prefill chunks, so its
    /// tokens can attend to each other both ways (see [`Media`]).
    pub fn forward_media<'w>(&self, tokens: &[u32], media: &[Media], cache: &mut KvCache, ws: &'w mut Workspace, mode: LogitsMode, adapter: Option<&LoraAdapter>) -> Result<&'w mut [f32]> {
        let cfg = &self.config;
        if cfg.bidirectional {
            return Err(GemmaError::invalid("model", "this is a bidirectional embedding model: it embeds text (gemma embed, /v1/embeddings) and does not generate"));
        }
        self.check_tokens(tokens, cache.len())?;
        let spans = self.media_spans(media, cache.len(), tokens.len())?;
        let rows = match mode {
            LogitsMode::Last => 1,
            LogitsMode::All => tokens.len(),
        };
        let (mut done, mut written) = (0, 0);
        while done < tokens.len() {
            let end = chunk_end(done, tokens.len(), MAX_CHUNK, &spans);
            let chunk = &tokens[done..end];
            self.forward_chunk(chunk, media, cache, ws, adapter);
            let want = match mode {
                LogitsMode::All => chunk.len(),
                LogitsMode::Last if end == tokens.len() => 1,
                LogitsMode::Last => 0,
            };
            if want > 0 {
                self.logits(ws, chunk.len() - want, want, written, rows);
                written += want;
            }
            done = end;
        }
        Ok(&mut ws.logits[..rows * cfg.vocab_size])
    }

    /// The runs of `media` as spans `a..b` relative to the new tokens
    /// (`cached` positions already in the cache, `n` new); errors for a run
    /// outside the new tokens, of a partial row, or overlapping another.
    pub(crate) fn media_spans(&self, media: &[Media], cached: usize, n: usize) -> Result<Vec<(usize, usize)>> {
        let hidden = self.config.hidden_size;
        let mut spans = Vec::with_capacity(media.len());
        for m in media {
            let len = m.rows.len() / hidden;
            if m.rows.is_empty() || m.rows.len() % hidden != 0 {
                return Err(GemmaError::invalid("media", format!("{} values are not whole rows of the model's width {hidden}", m.rows.len())));
            }
            let limit = self.config.step_limit();
            if len > limit {
                return Err(GemmaError::invalid("media", format!("a run of {len} rows is longer than the {limit} one step takes")));
            }
            if m.at < cached || m.at + len > cached + n {
                return Err(GemmaError::invalid("media", format!("rows at positions {}..{} are outside the new tokens {cached}..{}", m.at, m.at + len, cached + n)));
            }
            spans.push((m.at - cached, m.at - cached + len));
        }
        spans.sort_unstable();
        if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
            return Err(GemmaError::invalid("media", format!("runs at {}..{} and {}..{} overlap", w[0].0 + cached, w[0].1 + cached, w[1].0 + cached, w[1].1 + cached)));
        }
        Ok(spans)
    }

    /// The final-normed hidden states `[tokens, hidden]` of one whole
    /// sequence in a single pass (what an embedding model pools): every
    /// token is in the one chunk, so bidirectional attention sees them all.
    pub fn hidden_states(&self, tokens: &[u32], ws: &mut Workspace) -> Result<Vec<f32>> {
        Ok(self.hidden_states_batch(&[tokens], ws)?.pop().unwrap_or_default())
    }

    /// [`Model::hidden_states`] of several whole sequences in one pass: each
    /// is a segment with its own cache (attention never crosses them), their
    /// rows share every projection (so a row may round differently than
    /// alone, within ~1e-6). Returns one `[len_i, hidden]` per input.
    pub fn hidden_states_batch(&self, seqs: &[&[u32]], ws: &mut Workspace) -> Result<Vec<Vec<f32>>> {
        for s in seqs {
            self.check_tokens(s, 0)?;
        }
        let mut caches: Vec<KvCache> = seqs.iter().map(|_| KvCache::unbounded(&self.config)).collect();
        let mut segs = Vec::with_capacity(seqs.len());
        let mut row0 = 0;
        for (i, s) in seqs.iter().enumerate() {
            segs.push(Seg { row0, n: s.len(), start: 0, item: i, decode: false, adapter: None, exact: false, media: &[] });
            row0 += s.len();
        }
        let mut items: Vec<(&[u32], &mut KvCache)> = seqs.iter().copied().zip(caches.iter_mut()).collect();
        // One product per projection over every row: weights are read once
        // for the whole batch (the reason to batch embeddings).
        ws.shared_products = seqs.len() > 1;
        self.run_segments(&segs, &mut items, ws, None);
        ws.shared_products = false;
        let hidden = self.config.hidden_size;
        Ok(segs
            .iter()
            .map(|seg| {
                let mut out = vec![0f32; seg.n * hidden];
                rms_norm(&ws.x[seg.row0 * hidden..(seg.row0 + seg.n) * hidden], &self.weights.final_norm, self.config.rms_norm_eps, &mut out);
                out
            })
            .collect())
    }

    /// Errors for an empty run, out-of-vocabulary ids, or a context overflow
    /// after `cached` positions.
    pub(crate) fn check_tokens(&self, tokens: &[u32], cached: usize) -> Result<()> {
        let cfg = &self.config;
        if tokens.is_empty() {
            return Err(GemmaError::invalid("tokens", "forward needs at least one token"));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(GemmaError::InvalidToken { id: bad, vocab_size: cfg.vocab_size });
        }
        let end = cached + tokens.len();
        if end > cfg.max_position_embeddings {
            return Err(GemmaError::invalid(
                "tokens",
                format!("sequence of {end} tokens exceeds the model's context of {} (max_position_embeddings)", cfg.max_position_embeddings),
            ));
        }
        Ok(())
    }

    /// Final norm, output head and final softcap for rows `first..first+rows`
    /// of the residual stream, into rows `at..at+rows` of the logits buffer
    /// (sized for `total` rows).
    fn logits(&self, sc: &mut Workspace, first: usize, rows: usize, at: usize, total: usize) {
        let (hidden, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let h = buf(&mut sc.h, rows * hidden);
        rms_norm(&sc.x[first * hidden..(first + rows) * hidden], &self.weights.final_norm, self.config.rms_norm_eps, h);
        buf(&mut sc.logits, total * vocab);
        let logits = &mut sc.logits[at * vocab..(at + rows) * vocab];
        matmul(h, rows, self.weights.head(), logits);
        if let Some(cap) = self.config.final_softcap {
            softcap(logits, cap);
        }
    }

    /// All blocks over one chunk; leaves the residual stream `[n, hidden]` in `ws.x`.
    fn forward_chunk(&self, tokens: &[u32], media: &[Media], cache: &mut KvCache, ws: &mut Workspace, adapter: Option<&LoraAdapter>) {
        let start = cache.len();
        let segs = [Seg { row0: 0, n: tokens.len(), start, item: 0, decode: false, adapter, exact: false, media }];
        self.run_segments(&segs, &mut [(tokens, cache)], ws, None);
    }

    /// Embed the tokens of every segment (rows in `segs` order) and run all
    /// blocks; leaves the residual stream in `sc.x` and advances each cache.
    /// Decode segments (one token each) come first. With a `tape` (training)
    /// every block records what its backward needs.
    pub(crate) fn run_segments(&self, segs: &[Seg], items: &mut [(&[u32], &mut KvCache)], sc: &mut Workspace, mut tape: Option<&mut Tape>) {
        let cfg = &self.config;
        let hidden = cfg.hidden_size;
        let n: usize = segs.iter().map(|s| s.n).sum();
        let x = buf(&mut sc.x, n * hidden);
        for seg in segs {
            for (t, &tok) in seg_tokens(seg, items).iter().enumerate() {
                let row = &mut x[(seg.row0 + t) * hidden..(seg.row0 + t + 1) * hidden];
                gemma_quant::read_f32(&self.weights.embed.storage, tok as usize * hidden, row);
                row.iter_mut().for_each(|v| *v *= cfg.embed_scale);
            }
            // Media rows replace their placeholders' embeddings (unscaled, as
            // transformers scatters the projected features).
            for m in seg.media {
                for (i, row) in m.rows.chunks_exact(hidden).enumerate() {
                    if let Some(t) = (m.at + i).checked_sub(seg.start).filter(|&t| t < seg.n) {
                        x[(seg.row0 + t) * hidden..(seg.row0 + t + 1) * hidden].copy_from_slice(row);
                    }
                }
            }
        }
        if self.weights.ple.is_some() {
            gemma4::per_layer_inputs(self, segs, items, sc);
        }
        // Gemma 3n: the residual is several AltUp streams; blocks run on the active one.
        gemma3n::expand(self, segs, &sc.x[..n * hidden], &mut sc.streams);
        for (l, lw) in self.weights.layers.iter().enumerate() {
            let (drop, lt) = match tape.as_deref_mut() {
                Some(t) => (Some((t.dropout, t.seed)).filter(|d| d.0 > 0.0), Some(&mut t.layers[l])),
                None => (None, None),
            };
            self.block(l, lw, segs, items, sc, lt, drop);
        }
        gemma3n::collapse(self, segs, &sc.streams, &mut sc.x[..n * hidden]);
        for seg in segs {
            items[seg.item].1.advance(seg.n);
        }
    }

    /// `y = x · wᵀ (+ s · B·A·dropout(x) with a LoRA pair)` over the rows of
    /// all segments. `drop` = (probability, seed) while training: the LoRA
    /// input's element `i` (of the `[n, in]` rows) is kept by
    /// [`dropout_keep`]`(seed ^ tag, i)` and scaled by `1 / (1 − p)`.
    /// `exact` (training) takes the training product ([`gemma_kernels::matmul_train`]).
    fn project(segs: &[Seg], x: &[f32], w: &Matrix, y: &mut [f32], lora: Option<&LoraPair>, drop: Option<(f32, u64)>, exact: bool) {
        if exact {
            gemma_kernels::matmul_train(x, y.len() / w.rows, w, y);
        } else {
            Self::project_plain(segs, x, w, y);
        }
        if let Some(l) = lora {
            let n: usize = segs.iter().map(|s| s.n).sum();
            let mut t = vec![0f32; n * l.a.rows];
            let dropped: Vec<f32>;
            let x = match drop {
                Some((p, seed)) => {
                    let keep = 1.0 / (1.0 - p);
                    dropped = x.iter().enumerate().map(|(i, &v)| if dropout_keep(seed, i, p) { v * keep } else { 0.0 }).collect();
                    &dropped[..]
                }
                None => x,
            };
            Self::project_plain(segs, x, &l.a, &mut t);
            let mut u = vec![0f32; n * l.b.rows];
            Self::project_plain(segs, &t, &l.b, &mut u);
            y.iter_mut().zip(&u).for_each(|(y, u)| *y += l.scale * u);
        }
    }

    /// Per-request adapters: `y += s · B·A·x` on the rows of each segment
    /// whose item has its own adapter, for projection `p` of layer `l`. The
    /// rows of one adapter are gathered and go through [`Self::project_plain`]
    /// (decode rows in one batch-invariant product, prefill segments one by
    /// one), so each row is what that adapter gives the sequence alone.
    fn adapter_deltas(segs: &[Seg], x: &[f32], l: usize, p: Proj, y: &mut [f32]) {
        if segs.iter().all(|s| s.adapter.is_none()) {
            return;
        }
        let n: usize = segs.iter().map(|s| s.n).sum();
        let (din, dout) = (x.len() / n, y.len() / n);
        let mut done: Vec<*const LoraAdapter> = Vec::new();
        for a in segs.iter().filter_map(|s| s.adapter) {
            if done.contains(&(a as *const _)) {
                continue;
            }
            done.push(a);
            let Some(pair) = a.layers.get(l).and_then(|ll| ll.parts[p.index()].as_ref()) else { continue };
            let mine: Vec<&Seg> = segs.iter().filter(|s| s.adapter.is_some_and(|b| std::ptr::eq(a, b))).collect();
            let mut sub = Vec::with_capacity(mine.len());
            let mut xs = Vec::new();
            for s in &mine {
                sub.push(Seg { row0: xs.len() / din, ..**s });
                xs.extend_from_slice(&x[s.row0 * din..(s.row0 + s.n) * din]);
            }
            let m = xs.len() / din;
            let mut t = vec![0f32; m * pair.a.rows];
            Self::project_plain(&sub, &xs, &pair.a, &mut t);
            let mut u = vec![0f32; m * dout];
            Self::project_plain(&sub, &t, &pair.b, &mut u);
            for (s, ss) in mine.iter().zip(&sub) {
                let dst = &mut y[s.row0 * dout..(s.row0 + s.n) * dout];
                dst.iter_mut().zip(&u[ss.row0 * dout..(ss.row0 + s.n) * dout]).for_each(|(y, u)| *y += pair.scale * u);
            }
        }
    }

    /// `y = x · wᵀ` over the rows of all segments: decode rows in one
    /// batch-invariant product, each prefill segment on its own (so the
    /// training forward's logits equal inference's bit for bit); quantized
    /// weights in training segments (`exact`) in one training product
    /// (`matmul_train`).
    pub(crate) fn project_plain(segs: &[Seg], x: &[f32], w: &Matrix, y: &mut [f32]) {
        let (din, dout) = (w.cols, w.rows);
        if w.dtype().is_quantized() && segs.first().is_some_and(|s| s.exact) {
            let rows = segs.iter().map(|s| s.row0 + s.n).max().unwrap_or(0);
            gemma_kernels::matmul_train(&x[..rows * din], rows, w, &mut y[..rows * dout]);
            return;
        }
        let nd: usize = segs.iter().filter(|s| s.decode).map(|s| s.n).sum();
        if nd > 0 {
            matmul_decode(&x[..nd * din], nd, w, &mut y[..nd * dout]);
        }
        for s in segs.iter().filter(|s| !s.decode) {
            matmul(&x[s.row0 * din..(s.row0 + s.n) * din], s.n, w, &mut y[s.row0 * dout..(s.row0 + s.n) * dout]);
        }
    }

    /// Attention shape and masking of layer `l`.
    pub(crate) fn attn_shape(&self, l: usize) -> AttnShape {
        let cfg = &self.config;
        let spec = &cfg.layers[l];
        AttnShape {
            heads: cfg.num_heads,
            group: cfg.num_heads / spec.num_kv_heads,
            head_dim: spec.head_dim,
            window: match cfg.layers[l].attention {
                AttentionKind::Global => usize::MAX,
                AttentionKind::Sliding { window } => window,
            },
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
            causal: !cfg.bidirectional,
        }
    }
}
