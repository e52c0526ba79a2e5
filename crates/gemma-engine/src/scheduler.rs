//! The scheduler loop: admit, batch one step, sample, stream, retire.

use crate::logprobs::logprobs;
use crate::{EngineConfig, EngineStats, Event, FinishReason, Job, Summary, TokenEvent};
use gemma::Gemma;
use gemma_generate::{Sampler, StopStrings, TokenStreamDecoder};
use gemma_model::{BatchItem, BatchWorkspace, KvCache};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A request holding a slot.
struct Seq {
    job: Job,
    cache: KvCache,
    /// Prompt tokens already prefilled.
    pos: usize,
    /// The token to feed at the next decode step.
    last: [u32; 1],
    sampler: Sampler,
    /// Prompt and generated ids (for the repetition penalty).
    context: Vec<u32>,
    generated: usize,
    counts: HashMap<u32, u32>,
    decoder: TokenStreamDecoder,
    stops: StopStrings,
    admitted: Instant,
    first_token: Option<Duration>,
    queue_time: Duration,
}

impl Seq {
    fn new(gemma: &Gemma, job: Job, sampler: Sampler) -> Self {
        let now = Instant::now();
        Seq {
            cache: gemma.model.new_cache(),
            pos: 0,
            last: [0],
            sampler,
            context: job.req.prompt.clone(),
            generated: 0,
            counts: HashMap::new(),
            decoder: TokenStreamDecoder::new(),
            stops: StopStrings::new(&job.req.stop_strings),
            admitted: now,
            first_token: None,
            queue_time: now.duration_since(job.queued_at),
            job,
        }
    }

    fn summary(&mut self, gemma: &Gemma, finish: FinishReason) -> Summary {
        let mut tail = String::new();
        if !matches!(finish, FinishReason::StopString(_)) {
            if let Ok(Some(piece)) = self.decoder.flush(&gemma.tokenizer) {
                let check = self.stops.push(&piece);
                tail = check.emit;
            }
        }
        Summary {
            finish,
            prompt_tokens: self.job.req.prompt.len(),
            generated_tokens: self.generated,
            queue_time: self.queue_time,
            time_to_first_token: self.first_token.unwrap_or_default(),
            inference_time: self.admitted.elapsed(),
            tail_text: tail,
        }
    }
}

/// Run until the request channel is closed and every sequence is done.
pub(crate) fn run(gemma: &Gemma, config: &EngineConfig, rx: mpsc::Receiver<Job>, stats: &EngineStats) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut ws = BatchWorkspace::default();
    let vocab = gemma.model.config.vocab_size;
    let context_limit = gemma.model.config.max_position_embeddings;
    let mut open = true;
    loop {
        // Intake: block only when there is nothing to do.
        if running.is_empty() && waiting.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Cancelled requests leave at once, waiting or running.
        let before = waiting.len();
        waiting.retain(|j| !j.cancel.load(Ordering::SeqCst));
        let mut left = before - waiting.len();
        running.retain(|s| !s.job.cancel.load(Ordering::SeqCst));
        while running.len() < config.max_batch {
            let Some(job) = waiting.pop_front() else { break };
            left += 1;
            match Sampler::new(job.req.params.clone()) {
                Ok(sampler) => running.push(Seq::new(gemma, job, sampler)),
                // (validated at submit; kept for safety)
                Err(e) => {
                    let _ = job.tx.send(Event::Error(e.to_string()));
                }
            }
        }
        stats.queued.fetch_sub(left.min(stats.queued.load(Ordering::SeqCst)), Ordering::SeqCst);
        stats.running.store(running.len(), Ordering::SeqCst);
        if running.is_empty() {
            continue;
        }

        // One step: a prompt chunk for each prefilling sequence, one token for each decoding one.
        let mut samples = Vec::with_capacity(running.len());
        let result = {
            let mut items: Vec<BatchItem> = Vec::with_capacity(running.len());
            for s in running.iter_mut() {
                let Seq { job, cache, pos, last, .. } = s;
                let prompt = &job.req.prompt;
                if *pos < prompt.len() {
                    let end = (*pos + config.prefill_chunk.max(1)).min(prompt.len());
                    items.push(BatchItem { tokens: &prompt[*pos..end], cache });
                    *pos = end;
                    samples.push(end == prompt.len());
                } else {
                    items.push(BatchItem { tokens: &last[..], cache });
                    samples.push(true);
                }
            }
            gemma.model.forward_batch(&mut items, &mut ws)
        };
        stats.steps.fetch_add(1, Ordering::SeqCst);
        let logits = match result {
            Ok(l) => l,
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
            let row = &mut logits[i * vocab..(i + 1) * vocab];
            let req = &s.job.req;
            let lp = (req.logprobs || req.top_logprobs > 0).then(|| row.to_vec());
            for (&id, &c) in &s.counts {
                if let Some(l) = row.get_mut(id as usize) {
                    *l -= req.presence_penalty + req.frequency_penalty * c as f32;
                }
            }
            let id = s.sampler.sample(row, &s.context);
            if s.first_token.is_none() {
                s.first_token = Some(s.admitted.elapsed());
            }
            let finish = if req.stop_ids.contains(&id) {
                Some(FinishReason::StopToken(id))
            } else {
                s.generated += 1;
                s.context.push(id);
                *s.counts.entry(id).or_insert(0) += 1;
                s.last = [id];
                let piece = s.decoder.push(&gemma.tokenizer, id).ok().flatten().unwrap_or_default();
                let check = s.stops.push(&piece);
                let (logprob, top) = match &lp {
                    Some(raw) => {
                        let (l, t) = logprobs(raw, id, req.top_logprobs);
                        (Some(l), t)
                    }
                    None => (None, Vec::new()),
                };
                let ev = TokenEvent { id, text: check.emit, special: gemma.tokenizer.is_control(id), logprob, top };
                let _ = s.job.tx.send(Event::Token(ev));
                if let Some(stop) = check.stopped {
                    Some(FinishReason::StopString(stop))
                } else if s.generated >= req.max_new_tokens {
                    Some(FinishReason::Length)
                } else if s.cache.len() + 1 > context_limit {
                    Some(FinishReason::ContextFull)
                } else {
                    None
                }
            };
            if let Some(f) = finish {
                let summary = s.summary(gemma, f);
                let _ = s.job.tx.send(Event::Done(summary));
                done[i] = true;
            }
        }
        let mut i = 0;
        running.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        stats.running.store(running.len(), Ordering::SeqCst);
    }
}
