//! The scheduler loop: admit, batch one step, score, sample, stream, retire.
//! Every per-token decision is the sequence's `SequenceState` (the same one
//! `Gemma::generate` drives); this file only batches and routes.

use crate::embed_queue::EmbedQueue;
use crate::prefix_cache::{PrefixCache, Run};
use crate::{EngineConfig, EngineStats, Event, FinishReason, Job, Summary, TokenEvent, Work};
use gemma::Gemma;
use gemma_generate::speculative::Taken;
use gemma_generate::Decoding;
use gemma_generate::{prompt_logprob, PromptLogprob, SequenceState, Step};
use gemma_model::{BatchItem, BatchWorkspace, KvCache, Media};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A request holding a slot.
struct Seq {
    job: Job,
    cache: KvCache,
    /// Prompt tokens already prefilled.
    pos: usize,
    /// Leading prompt tokens taken from the prefix cache.
    cached: usize,
    /// The stepping core `Gemma::generate` runs too: the state, the
    /// drafter and the next feed (the pending token, then a draft).
    dec: Decoding,
    /// Prompt scores gathered during prefill (when asked for).
    prompt_scores: Vec<PromptLogprob>,
    /// Whether the `Prompt` event went out.
    prompt_sent: bool,
    admitted: Instant,
    first_token: Option<Duration>,
    queue_time: Duration,
}

impl Seq {
    fn new(gemma: &Gemma, job: Job, state: SequenceState) -> Self {
        let now = Instant::now();
        let mut prompt_scores = Vec::new();
        if job.req.prompt_logprobs_from == Some(0) {
            // Nothing predicts the first token.
            prompt_scores.push(PromptLogprob { id: job.req.prompt[0], logprob: None, top: Vec::new() });
        }
        Seq {
            cache: gemma.model.new_cache(),
            pos: 0,
            cached: 0,
            dec: Decoding::new(state, &job.req),
            prompt_scores,
            prompt_sent: false,
            admitted: now,
            first_token: None,
            queue_time: now.duration_since(job.queued_at),
            job,
        }
    }

    fn summary(&self, finish: FinishReason, tail_text: String) -> Summary {
        Summary {
            finish,
            prompt_tokens: self.job.req.prompt.len(),
            generated_tokens: self.dec.state.generated().len(),
            cached_tokens: self.cached,
            queue_time: self.queue_time,
            time_to_first_token: self.first_token.unwrap_or_default(),
            inference_time: self.admitted.elapsed(),
            tail_text,
            drafted_tokens: self.dec.stats.drafted,
            accepted_tokens: self.dec.stats.accepted,
        }
    }
}

/// What a scored prefill chunk needs to score its rows.
struct ScoreSpan {
    /// Prompt position of the chunk's first token.
    chunk0: usize,
    /// The chunk's tokens and the one after it (row r predicts `tokens[r + 1]`).
    tokens: Vec<u32>,
    /// First prompt index to score.
    from: usize,
    /// Alternatives per position.
    top: usize,
}

/// A request's media runs as the prefix cache keys them.
fn runs(job: &Job, hidden: usize) -> Vec<Run> {
    job.req.media.iter().map(|m| Run { at: m.at, len: m.len(hidden), key: m.key }).collect()
}

/// Where a request goes on arrival: waiting for a slot, or first to the
/// image encoder.
fn arrive(job: Job, waiting: &mut VecDeque<Job>, encoding: &mut VecDeque<Job>, stats: &EngineStats, hidden: usize) {
    if job.images.iter().all(|im| im.encoded().is_some()) {
        ready(job, waiting, stats, hidden);
    } else {
        encoding.push_back(job);
    }
}

/// A request whose images are encoded: its media filled in, it waits for a slot.
fn ready(mut job: Job, waiting: &mut VecDeque<Job>, stats: &EngineStats, hidden: usize) {
    if !job.images.is_empty() {
        let encoded: Vec<_> = job.images.iter().filter_map(|im| im.encoded()).collect();
        match gemma::vision::place_media(&job.places, &encoded, hidden) {
            Ok(media) => job.req.media = media,
            Err(e) => {
                stats.queued.fetch_sub(1.min(stats.queued.load(Ordering::SeqCst)), Ordering::SeqCst);
                let _ = job.tx.send(Event::Error(e.to_string()));
                return;
            }
        }
        job.images.clear();
    }
    waiting.push_back(job);
}

/// Encode one tower layer of the first waiting request's images. The loop
/// calls this once per iteration, between batch steps, also when nothing
/// else runs: a request arriving meanwhile is admitted after one layer, not
/// after the whole image.
fn encode_pass(gemma: &Gemma, encoding: &mut VecDeque<Job>, waiting: &mut VecDeque<Job>, stats: &EngineStats) {
    let Some(job) = encoding.front_mut() else { return };
    let started = Instant::now();
    let result = match job.images.iter_mut().find(|im| im.encoded().is_none()) {
        None => Ok(()),
        Some(im) => {
            let before = im.encoded_views();
            let r = gemma.encode_step(im).map(|_| ());
            stats.images_encoded.fetch_add((im.encoded_views() - before) as u64, Ordering::SeqCst);
            r
        }
    }
    .map(|()| job.images.iter().all(|im| im.encoded().is_some()));
    stats.image_encode_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::SeqCst);
    match result {
        Ok(false) => {}
        Ok(true) => {
            if let Some(job) = encoding.pop_front() {
                ready(job, waiting, stats, gemma.model.config.hidden_size);
            }
        }
        Err(e) => {
            if let Some(job) = encoding.pop_front() {
                stats.queued.fetch_sub(1.min(stats.queued.load(Ordering::SeqCst)), Ordering::SeqCst);
                let _ = job.tx.send(Event::Error(format!("encoding an image failed: {e}")));
            }
        }
    }
}

/// Run until the request channel is closed and every sequence is done.
pub(crate) fn run(gemma: &Gemma, config: &EngineConfig, rx: mpsc::Receiver<Work>, stats: &EngineStats) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut encoding: VecDeque<Job> = VecDeque::new();
    let hidden = gemma.model.config.hidden_size;
    let mut embeds = EmbedQueue::default();
    let mut running: Vec<Seq> = Vec::new();
    let mut ws = BatchWorkspace::default();
    let mut prefixes = PrefixCache::new(config.prefix_cache_bytes);
    let vocab = gemma.model.config.vocab_size;
    let context = gemma.model.config.max_position_embeddings;
    let mut open = true;
    loop {
        // Intake: block only when there is nothing to do.
        if running.is_empty() && waiting.is_empty() && encoding.is_empty() && embeds.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(Work::Generate(job)) => arrive(job, &mut waiting, &mut encoding, stats, hidden),
                Ok(Work::Embed(job)) => embeds.push(job),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Work::Generate(job)) => arrive(job, &mut waiting, &mut encoding, stats, hidden),
                Ok(Work::Embed(job)) => embeds.push(job),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Cancelled requests leave at once, waiting or running.
        let before = waiting.len() + encoding.len();
        waiting.retain(|j| !j.cancel.load(Ordering::SeqCst));
        encoding.retain(|j| !j.cancel.load(Ordering::SeqCst));
        let mut left = before - waiting.len() - encoding.len();
        // Images between steps: one tower layer per iteration.
        encode_pass(gemma, &mut encoding, &mut waiting, stats);
        running.retain(|s| !s.job.cancel.load(Ordering::SeqCst));
        while running.len() < config.max_batch {
            let Some(job) = waiting.pop_front() else { break };
            left += 1;
            match SequenceState::new(&job.req, vocab, context) {
                Ok(state) => {
                    let mut s = Seq::new(gemma, job, state);
                    // At least the last prompt token is computed (its logits
                    // are sampled); scored rows are computed too.
                    let prompt = &s.job.req.prompt;
                    let limit = match s.job.req.prompt_logprobs_from {
                        Some(from) => from.saturating_sub(1),
                        None => prompt.len().saturating_sub(1),
                    };
                    let adapter = s.job.req.adapter.as_ref().map(|a| &a.lora);
                    if let Some((cache, n)) = prefixes.lookup(prompt, &runs(&s.job, hidden), adapter, limit, config.prefill_chunk) {
                        (s.cache, s.pos, s.cached) = (cache, n, n);
                        stats.cached_tokens.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    running.push(s);
                }
                // (validated at submit; kept for safety)
                Err(e) => {
                    let _ = job.tx.send(Event::Error(e.to_string()));
                }
            }
        }
        stats.queued.fetch_sub(left.min(stats.queued.load(Ordering::SeqCst)), Ordering::SeqCst);
        stats.running.store(running.len(), Ordering::SeqCst);
        stats.kv_tokens.store(running.iter().map(|s| s.cache.len()).sum(), Ordering::SeqCst);
        // One embedding pass (when any wait) between generation steps,
        // small while sequences are generating.
        if !embeds.is_empty() {
            let budget = if running.is_empty() { gemma::EMBED_BATCH_TOKENS } else { config.prefill_chunk };
            embeds.step(gemma, stats, budget);
        }
        if running.is_empty() {
            continue;
        }

        // One step: a prompt chunk for each prefilling sequence, one token for each decoding one.
        let mut samples = Vec::with_capacity(running.len());
        // Sequences whose prefill ends this step (their caches are kept for reuse).
        let mut prefilled = Vec::with_capacity(running.len());
        let mut score_info: Vec<Option<ScoreSpan>> = Vec::with_capacity(running.len());
        let mut scored: Vec<(usize, PromptLogprob)> = Vec::new();
        // The media of prefilling sequences (shared rows, so the items below can borrow them).
        let held: Vec<Vec<(usize, std::sync::Arc<[f32]>)>> = running
            .iter()
            .map(|s| if s.pos < s.job.req.prompt.len() { s.job.req.media.iter().map(|m| (m.at, m.rows.clone())).collect() } else { Vec::new() })
            .collect();
        let media: Vec<Vec<Media>> = held.iter().map(|h| h.iter().map(|(at, rows)| Media { at: *at, rows }).collect()).collect();
        // Drafts of decoding sequences, and room for their verified rows.
        for s in running.iter_mut().filter(|s| s.pos >= s.job.req.prompt.len()) {
            s.dec.plan(&s.job.req.prompt, &gemma.model, &mut s.cache);
        }
        let mut verify_rows: Vec<Option<Vec<f32>>> = running.iter().map(|s| (s.pos >= s.job.req.prompt.len() && s.dec.verifies()).then(|| Vec::with_capacity(s.dec.feed().len() * vocab))).collect();
        let result = {
            let mut items: Vec<BatchItem> = Vec::with_capacity(running.len());
            for (i, s) in running.iter_mut().enumerate() {
                let Seq { job, cache, pos, dec, .. } = s;
                let prompt = &job.req.prompt;
                let adapter = job.req.adapter.as_ref().map(|a| &*a.lora);
                if *pos < prompt.len() {
                    let spans: Vec<(usize, usize)> = media[i].iter().map(|m| (m.at, m.at + m.rows.len() / hidden)).collect();
                    let end = gemma_model::chunk_end(*pos, prompt.len(), config.prefill_chunk, &spans);
                    let score = job.req.prompt_logprobs_from.map(|from| ScoreSpan {
                        chunk0: *pos,
                        tokens: prompt[*pos..(end + 1).min(prompt.len())].to_vec(),
                        from,
                        top: job.req.top_logprobs,
                    });
                    // Row r predicts prompt[pos + r + 1]: only targets at or after `from` are needed.
                    let score_from = job.req.prompt_logprobs_from.map(|from| from.saturating_sub(*pos + 1));
                    // Last-token logits only where a token will be sampled from them.
                    let last_logits = end == prompt.len() && job.req.max_new_tokens > 0;
                    items.push(BatchItem { tokens: &prompt[*pos..end], cache, score_from, last_logits, adapter, verify: false, media: &media[i] });
                    score_info.push(score);
                    *pos = end;
                    samples.push(end == prompt.len());
                    prefilled.push(end == prompt.len());
                } else {
                    let verify = dec.verifies();
                    items.push(BatchItem { tokens: dec.feed(), cache, score_from: None, last_logits: !verify, adapter, verify, media: &[] });
                    score_info.push(None);
                    samples.push(true);
                    prefilled.push(false);
                }
            }
            gemma.model.forward_batch_out(&mut items, &mut ws, &mut |item, row, logits| {
                if let Some(rows) = verify_rows.get_mut(item).filter(|r| r.is_some()).and_then(|r| r.as_mut()) {
                    debug_assert_eq!(rows.len(), row * logits.len());
                    rows.extend_from_slice(logits);
                    return;
                }
                if let Some(sp) = &score_info[item] {
                    if row + 1 < sp.tokens.len() && sp.chunk0 + row + 1 >= sp.from {
                        scored.push((item, prompt_logprob(logits, sp.tokens[row + 1], sp.top)));
                    }
                }
            })
        };
        for (item, p) in scored {
            running[item].prompt_scores.push(p);
        }
        if result.is_ok() {
            for (s, _) in running.iter().zip(&prefilled).filter(|(_, &p)| p) {
                if s.job.req.prompt.len() >= config.prefill_chunk {
                    prefixes.insert(&s.job.req.prompt, &runs(&s.job, hidden), &s.cache, s.job.req.adapter.as_ref().map(|a| &a.lora));
                }
            }
            stats.prefix_cache_bytes.store(prefixes.bytes(), Ordering::SeqCst);
        }
        stats.steps.fetch_add(1, Ordering::SeqCst);
        let (logits, out_hidden) = match result {
            Ok(o) => (o.logits, o.hidden),
            Err(e) => {
                for s in running.drain(..) {
                    let _ = s.job.tx.send(Event::Error(format!("generation failed: {e}")));
                }
                continue;
            }
        };

        // Sample, stream, retire.
        let mut done = vec![false; running.len()];
        for (i, s) in running.iter_mut().enumerate() {
            if !samples[i] {
                continue;
            }
            if s.job.req.prompt_logprobs_from.is_some() && !s.prompt_sent {
                s.prompt_sent = true;
                let _ = s.job.tx.send(Event::Prompt(std::mem::take(&mut s.prompt_scores)));
            }
            if s.dec.state.finish().is_some() {
                // Scoring only (max_new_tokens = 0).
                let summary = s.summary(FinishReason::Length, String::new());
                let _ = s.job.tx.send(Event::Done(summary));
                done[i] = true;
                continue;
            }
            // One row, or a verify step's rows in order: each chooses the
            // token after the one fed before it, until a choice differs
            // from the draft (see gemma_generate::speculative).
            let mut verified = verify_rows[i].take();
            let rows: &mut [f32] = match verified.as_mut() {
                Some(r) => &mut r[..],
                None => &mut logits[i * vocab..(i + 1) * vocab],
            };
            if s.first_token.is_none() {
                s.first_token = Some(s.admitted.elapsed());
            }
            let tx = &s.job.tx;
            let before = s.dec.stats;
            let taken = s.dec.take(rows, &out_hidden[i], &mut s.cache, &gemma.tokenizer, &mut |step: &Step| {
                if step.emitted {
                    let ev = TokenEvent { id: step.id, text: step.text.clone(), special: gemma.tokenizer.is_control(step.id), logprob: step.logprob, top: step.top.clone() };
                    let _ = tx.send(Event::Token(ev));
                }
                true
            });
            let taken = match taken {
                Ok(t) => t,
                Err(e) => {
                    let _ = s.job.tx.send(Event::Error(format!("generation failed: {e}")));
                    done[i] = true;
                    continue;
                }
            };
            stats.drafted_tokens.fetch_add((s.dec.stats.drafted - before.drafted) as u64, Ordering::SeqCst);
            stats.accepted_tokens.fetch_add((s.dec.stats.accepted - before.accepted) as u64, Ordering::SeqCst);
            match taken {
                Taken::Next(_) => {}
                Taken::Finished(step) => {
                    let f = step.finish.unwrap_or(FinishReason::Length);
                    let _ = s.job.tx.send(Event::Done(s.summary(f, step.tail)));
                    done[i] = true;
                    continue;
                }
                Taken::Cancelled => done[i] = true,
            }
        }
        let mut i = 0;
        running.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        stats.running.store(running.len(), Ordering::SeqCst);
        stats.kv_tokens.store(running.iter().map(|s| s.cache.len()).sum(), Ordering::SeqCst);
    }
}
