//! One sequence's decoding state: what happens between "the model produced
//! next-token logits" and "this token and this text go out". The library's
//! generate loop and the serving engine both drive it, so sampling,
//! penalties, stops, detokenizing, logprobs, limits and finish reasons are
//! decided in one place.
//!
//! Per token: logprobs are read from the raw logits, the processor chain
//! edits them (repetition, presence/frequency, later grammars), the sampler
//! draws, every processor accepts the choice, then stop ids, the
//! detokenizer, stop strings and the length/context limits decide what text
//! is released and whether the sequence ends. When it ends for any reason
//! but a stop string or cancellation, text held back (an incomplete UTF-8
//! character, a possible start of a stop string) is released as the tail.

use crate::detokenize::TokenStreamDecoder;
use crate::grammar::Constraint;
use crate::logprobs::{log_sum_exp, top_logprobs, TokenLogprob};
use crate::processors::{LogitsProcessor, PresenceFrequencyPenalty, RepetitionPenalty};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopStrings;
use gemma_core::{GemmaError, Result};
use gemma_tokenizer::GemmaTokenizer;

/// Most alternatives reported per position (OpenAI's and vLLM's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What to generate (and score).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The full prompt, BOS included when the model wants it.
    pub prompt: Vec<u32>,
    /// Sampling settings (temperature, top-k/p, min-p, repetition penalty, seed).
    pub params: SamplingParams,
    /// OpenAI presence penalty over the generated tokens (0 disables).
    pub presence_penalty: f32,
    /// OpenAI frequency penalty over the generated tokens (0 disables).
    pub frequency_penalty: f32,
    /// Upper bound on generated tokens (0: score the prompt only).
    pub max_new_tokens: usize,
    /// Ids that end generation (not included in the output text).
    pub stop_ids: Vec<u32>,
    /// Strings that end generation (cut from the output text).
    pub stop_strings: Vec<String>,
    /// Report each generated token's log-probability.
    pub logprobs: bool,
    /// Also report this many most likely alternatives per position.
    pub top_logprobs: usize,
    /// Score the prompt from this index on: each prompt token's
    /// log-probability given the tokens before it (None: no prompt scoring).
    pub prompt_logprobs_from: Option<usize>,
    /// A compiled grammar the output must match (constrained decoding).
    pub constraint: Option<Constraint>,
    /// A LoRA adapter of its own (per-request adapters, served over one base).
    pub adapter: Option<Adapter>,
    /// Embedding rows in place of runs of placeholder tokens (images' soft
    /// tokens), in prompt order.
    pub media: Vec<MediaInput>,
    /// Speculative decoding (off by default): the output is the same either way.
    pub speculation: crate::speculative::Speculation,
}

/// An encoded image (or other medium) in a prompt: its soft tokens replace
/// the placeholder ids at `at..at + len`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInput {
    /// Prompt index of the first soft token.
    pub at: usize,
    /// `[len, hidden]`.
    pub rows: std::sync::Arc<[f32]>,
    /// Content hash of the source (sessions and the prefix cache key on it:
    /// two images behind the same placeholder ids never share keys and values).
    pub key: [u8; 32],
}

impl MediaInput {
    /// Soft tokens in the run.
    pub fn len(&self, hidden: usize) -> usize {
        self.rows.len() / hidden
    }
}

/// A named LoRA adapter, shared by the requests that use it.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// The name requests pick it by.
    pub name: String,
    /// The loaded weights.
    pub lora: std::sync::Arc<gemma_model::LoraAdapter>,
}

/// The same name and the same loaded weights.
impl PartialEq for Adapter {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && std::sync::Arc::ptr_eq(&self.lora, &other.lora)
    }
}

impl GenerateRequest {
    /// A greedy request for `prompt` that stops at `stop_ids`.
    pub fn new(prompt: Vec<u32>, max_new_tokens: usize, stop_ids: Vec<u32>) -> Self {
        Self {
            prompt,
            params: SamplingParams::greedy(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            max_new_tokens,
            stop_ids,
            stop_strings: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            prompt_logprobs_from: None,
            constraint: None,
            adapter: None,
            media: Vec::new(),
            speculation: Default::default(),
        }
    }

    /// Check everything that does not depend on a server's limits: a
    /// non-empty prompt of ids inside the vocabulary that leaves room in the
    /// context, sampling values and penalties in range, logprob counts.
    pub fn validate(&self, vocab: usize, context: usize) -> Result<()> {
        let n = self.prompt.len();
        if n == 0 {
            return Err(GemmaError::invalid("prompt", "the prompt has no tokens"));
        }
        if let Some(&bad) = self.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(GemmaError::InvalidToken { id: bad, vocab_size: vocab });
        }
        if n > context || (n == context && self.max_new_tokens > 0) {
            return Err(GemmaError::invalid("prompt", format!("{n} tokens leave no room in the model's context of {context}")));
        }
        if self.max_new_tokens == 0 && self.prompt_logprobs_from.is_none() {
            return Err(GemmaError::invalid("max_new_tokens", "must be at least 1 (0 is only for scoring the prompt)"));
        }
        if let Some(from) = self.prompt_logprobs_from {
            if from >= n {
                return Err(GemmaError::invalid("prompt_logprobs_from", format!("{from} is past the prompt's {n} tokens")));
            }
        }
        self.params.validate()?;
        for (name, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !(v.is_finite() && (-2.0..=2.0).contains(&v)) {
                return Err(GemmaError::invalid(name, format!("must be in [-2, 2], got {v}")));
            }
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(GemmaError::invalid("top_logprobs", format!("must be <= {MAX_TOP_LOGPROBS}, got {}", self.top_logprobs)));
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// A stop id (EOS, `<end_of_turn>`) was sampled.
    StopToken(u32),
    /// A stop string appeared.
    StopString(String),
    /// The model's context is full.
    ContextFull,
    /// The caller asked to stop.
    Cancelled,
}

/// The outcome of one decoding step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The token chosen.
    pub id: u32,
    /// False when `id` is a stop id: it ends the sequence and is not output.
    pub emitted: bool,
    /// Text this token made final (empty while a character or a possible
    /// stop string is incomplete).
    pub text: String,
    /// Held-back text released because the sequence ended with this step.
    pub tail: String,
    /// `log p(id)` under the raw logits (when logprobs were asked for).
    pub logprob: Option<f32>,
    /// The most likely alternatives (when asked for).
    pub top: Vec<TokenLogprob>,
    /// Set when the sequence ended with this step.
    pub finish: Option<FinishReason>,
}

/// A sequence being decoded.
#[derive(Debug)]
pub struct SequenceState {
    chain: Vec<Box<dyn LogitsProcessor>>,
    sampler: Sampler,
    decoder: TokenStreamDecoder,
    stops: StopStrings,
    stop_ids: Vec<u32>,
    max_new_tokens: usize,
    /// Most tokens the context leaves room for.
    room: usize,
    want_logprobs: bool,
    top_logprobs: usize,
    /// Copy of the raw logits when processors edit them (reused).
    raw: Vec<f32>,
    generated: Vec<u32>,
    finish: Option<FinishReason>,
    /// Try a draw before the last processor's filter (see `choose`).
    try_unfiltered: bool,
}

impl SequenceState {
    /// Start decoding after `req.prompt` for a model with this vocabulary
    /// and context (the request is validated first).
    pub fn new(req: &GenerateRequest, vocab: usize, context: usize) -> Result<Self> {
        req.validate(vocab, context)?;
        let mut chain: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        if req.params.repetition_penalty != 1.0 {
            chain.push(Box::new(RepetitionPenalty::new(req.params.repetition_penalty, vocab, &req.prompt)));
        }
        if req.presence_penalty != 0.0 || req.frequency_penalty != 0.0 {
            chain.push(Box::new(PresenceFrequencyPenalty::new(req.presence_penalty, req.frequency_penalty)));
        }
        // The grammar comes last: it sees the penalized logits and only removes tokens.
        if let Some(c) = &req.constraint {
            chain.push(Box::new(c.processor(&req.stop_ids)));
        }
        Ok(Self {
            chain,
            sampler: Sampler::new(req.params.clone())?,
            decoder: TokenStreamDecoder::new(),
            stops: StopStrings::new(&req.stop_strings),
            stop_ids: req.stop_ids.clone(),
            max_new_tokens: req.max_new_tokens,
            // The last token sampled is never fed, so one more than the free positions.
            room: context + 1 - req.prompt.len(),
            want_logprobs: req.logprobs || req.top_logprobs > 0,
            top_logprobs: req.top_logprobs,
            raw: Vec::new(),
            generated: Vec::new(),
            finish: (req.max_new_tokens == 0).then_some(FinishReason::Length),
            try_unfiltered: req.constraint.is_some(),
        })
    }

    /// How many more tokens may still be chosen (the token limit and the
    /// context's room, whichever ends first).
    pub fn remaining(&self) -> usize {
        self.max_new_tokens.min(self.room).saturating_sub(self.generated.len())
    }

    /// Add a processor at the end of the chain (before the sampler).
    pub fn push_processor(&mut self, p: Box<dyn LogitsProcessor>) {
        self.chain.push(p);
    }

    /// The distribution the next [`SequenceState::step`] draws from for the
    /// model's `logits` (`[vocab]`, edited in place by the processors —
    /// penalties, grammar — as a step edits them): `(id, probability)` of
    /// every token it can choose, most likely first. Draws and advances
    /// nothing (what a sampling drafter or a caller weighing alternatives
    /// needs).
    pub fn distribution(&mut self, logits: &mut [f32]) -> Result<Vec<(u32, f64)>> {
        for p in self.chain.iter_mut() {
            p.apply(logits)?;
        }
        Ok(self.sampler.distribution(logits))
    }

    /// Choose the next token from the model's `logits` (`[vocab]`, edited in
    /// place) and advance. Must not be called once finished.
    pub fn step(&mut self, logits: &mut [f32], tok: &GemmaTokenizer) -> Result<Step> {
        if let Some(f) = &self.finish {
            return Err(GemmaError::invalid("step", format!("the sequence has already finished ({f:?})")));
        }
        // Logprobs come from the raw logits: alternatives read before the
        // chain edits them, the chosen id's raw value after the draw.
        let (mut logprob, mut top) = (None, Vec::new());
        let raw = if self.want_logprobs {
            if !self.chain.is_empty() {
                self.raw.clear();
                self.raw.extend_from_slice(logits);
            }
            let lse = log_sum_exp(logits);
            Some((lse, top_logprobs(logits, lse, self.top_logprobs)))
        } else {
            None
        };
        let id = self.choose(logits)?;
        if let Some((lse, t)) = raw {
            let row: &[f32] = if self.chain.is_empty() { logits } else { &self.raw };
            logprob = Some(row.get(id as usize).map_or(f32::NEG_INFINITY, |&l| l - lse));
            top = t;
        }
        if self.stop_ids.contains(&id) {
            let tail = self.end(FinishReason::StopToken(id), tok)?;
            return Ok(Step { id, emitted: false, text: String::new(), tail, logprob, top, finish: self.finish.clone() });
        }
        for p in self.chain.iter_mut() {
            p.accept(id)?;
        }
        self.generated.push(id);
        let mut text = String::new();
        if let Some(piece) = self.decoder.push(tok, id)? {
            let check = self.stops.push(&piece);
            text = check.emit;
            if let Some(s) = check.stopped {
                self.finish = Some(FinishReason::StopString(s));
            }
        }
        let mut tail = String::new();
        if self.finish.is_none() {
            if self.generated.len() >= self.max_new_tokens {
                tail = self.end(FinishReason::Length, tok)?;
            } else if self.generated.len() >= self.room {
                tail = self.end(FinishReason::ContextFull, tok)?;
            }
        }
        Ok(Step { id, emitted: true, text, tail, logprob, top, finish: self.finish.clone() })
    }

    /// Run the chain and draw. When the chain ends in a filter (a grammar)
    /// and the sampler commutes with filtering, draw from the unfiltered
    /// logits first and keep the token if the filter allows it; only
    /// otherwise build the full mask and draw again. Exact: greedy takes
    /// the argmax of the allowed set either way, and for temperature
    /// sampling a rejected first draw followed by a draw from the filtered
    /// distribution yields `p(x) / p(allowed)` for every allowed `x`.
    fn choose(&mut self, logits: &mut [f32]) -> Result<u32> {
        let n = self.chain.len();
        let skip = self.try_unfiltered && n > 0 && self.sampler.params().filter_commutes();
        if skip {
            for p in self.chain[..n - 1].iter_mut() {
                p.apply(logits)?;
            }
            let id = self.sampler.sample(logits);
            let last = &mut self.chain[n - 1];
            match last.allows(id)? {
                Some(true) => return Ok(id),
                Some(false) => {
                    last.apply(logits)?;
                    return Ok(self.sampler.sample(logits));
                }
                // Not a filter: it changes values, so it must see the logits first.
                None => {
                    self.try_unfiltered = false;
                    last.apply(logits)?;
                    return Ok(self.sampler.sample(logits));
                }
            }
        }
        for p in self.chain.iter_mut() {
            p.apply(logits)?;
        }
        Ok(self.sampler.sample(logits))
    }

    /// End for `reason`, releasing what the decoder and the stop strings
    /// held back (unless a stop string completes inside it).
    fn end(&mut self, reason: FinishReason, tok: &GemmaTokenizer) -> Result<String> {
        let mut tail = String::new();
        let mut finish = reason;
        if let Some(piece) = self.decoder.flush(tok)? {
            let check = self.stops.push(&piece);
            tail.push_str(&check.emit);
            if let Some(s) = check.stopped {
                finish = FinishReason::StopString(s);
            }
        }
        if !matches!(finish, FinishReason::StopString(_)) {
            tail.push_str(&self.stops.finish());
        }
        self.finish = Some(finish);
        Ok(tail)
    }

    /// Stop now (the caller went away or asked to); held-back text is dropped.
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    /// Why the sequence ended (None while it runs).
    pub fn finish(&self) -> Option<&FinishReason> {
        self.finish.as_ref()
    }

    /// Generated ids (a final stop id excluded).
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// All text released so far (stop strings cut).
    pub fn text(&self) -> &str {
        self.stops.text()
    }
}

