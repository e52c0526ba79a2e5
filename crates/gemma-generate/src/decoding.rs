//! One sequence's decode steps, the stepping core both drivers share:
//! [`crate::generate()`] runs one sequence through it, the engine's
//! scheduler many in one batched forward. Each step is *plan* (the tokens
//! the next forward feeds: the pending token, then a draft sized to the
//! token limit, the context and one step) and *take* (the rows that forward
//! gave back go through the [`SequenceState`] in order, the drafter learns
//! how it did, rejected draft rows leave the cache). Only the forward
//! differs between the drivers; every decision is made here.

use crate::sequence::{GenerateRequest, SequenceState, Step};
use crate::speculative::{take_rows, DraftPenalties, Drafter, SpecStats, Taken};
use gemma_core::{GemmaError, Result};
use gemma_model::{KvCache, Model};
use gemma_tokenizer::GemmaTokenizer;

/// A sequence's decoding: its state, its drafter and the next feed.
#[derive(Debug)]
pub struct Decoding {
    /// Sampling, processors, stops, detokenizing: every choice.
    pub state: SequenceState,
    drafter: Drafter,
    speculating: bool,
    /// The next step's tokens: the pending token, then the draft (empty
    /// before the first token is chosen).
    feed: Vec<u32>,
    /// The feed of the step last taken, and how many of its tokens stayed.
    fed: Vec<u32>,
    kept: usize,
    /// Drafted and accepted counts so far.
    pub stats: SpecStats,
}

impl Decoding {
    /// The decoding of `req` in `state`, drafting as its speculation says (a
    /// draft model penalizing its drafts as the request's sampler does).
    pub fn new(state: SequenceState, req: &GenerateRequest) -> Self {
        let spec = &req.speculation;
        let drafter = Drafter::new(spec.clone()).with_penalties(DraftPenalties::of(req));
        Self { state, drafter, speculating: spec.is_on(), feed: Vec::new(), fed: Vec::new(), kept: 0, stats: SpecStats::default() }
    }

    /// The tokens the next forward feeds (the pending token, then the draft).
    pub fn feed(&self) -> &[u32] {
        &self.feed
    }

    /// Whether the next feed holds a draft to verify (every row's logits
    /// are needed, computed as plain decoding computes them).
    pub fn verifies(&self) -> bool {
        self.feed.len() > 1
    }

    /// Whether [`Decoding::take`] needs the hidden states behind the rows
    /// (an MTP assistant drafts from them).
    pub fn wants_hidden(&self) -> bool {
        self.drafter.wants_hidden()
    }

    /// The tokens of the step last taken whose keys and values stayed in
    /// the cache (the pending token and the accepted draft), in order.
    pub fn kept(&self) -> &[u32] {
        &self.fed[..self.kept]
    }

    /// Draft after the pending token, when the sequence speculates: as many
    /// as the token limit, the context and one step leave room for.
    /// `prompt` and the generated tokens are the context; `cache` is the
    /// sequence's (every position before the pending token).
    pub fn plan(&mut self, prompt: &[u32], model: &Model, cache: &mut KvCache) {
        self.feed.truncate(1);
        if !self.speculating || self.feed.is_empty() {
            return;
        }
        let mut context = Vec::with_capacity(prompt.len() + self.state.generated().len());
        context.extend_from_slice(prompt);
        context.extend_from_slice(self.state.generated());
        let mut draft = self.drafter.draft(&context, Some((model, cache)));
        let room = model.config.max_position_embeddings.saturating_sub(cache.len() + 1);
        draft.truncate(self.state.remaining().saturating_sub(1).min(room).min(gemma_model::MAX_CHUNK - 1));
        self.feed.extend_from_slice(&draft);
        self.stats.steps += 1;
    }

    /// Take the rows the forward gave for the feed (`rows` `[feed, vocab]`;
    /// after the prompt, its last row), handing each step to `emit` (false:
    /// cancel), until a choice differs from the draft; `hidden` `[rows,
    /// hidden]` are the states behind the rows (only read when
    /// [`Decoding::wants_hidden`]). The rejected draft's keys and values
    /// leave `cache`; the chosen token becomes the next feed's first.
    pub fn take(&mut self, rows: &mut [f32], hidden: &[f32], cache: &mut KvCache, tok: &GemmaTokenizer, emit: &mut dyn FnMut(&Step) -> bool) -> Result<Taken> {
        std::mem::swap(&mut self.fed, &mut self.feed);
        self.feed.clear();
        let draft = self.fed.get(1..).unwrap_or(&[]);
        let (accepted, taken) = take_rows(&mut self.state, rows, draft, tok, emit)?;
        let drafted = draft.len();
        self.stats.drafted += drafted;
        self.stats.accepted += accepted;
        self.kept = if self.fed.is_empty() { 0 } else { 1 + accepted };
        self.drafter.update(drafted, accepted);
        if drafted > accepted {
            let keep = cache.len() - (drafted - accepted);
            if !cache.truncate(keep) {
                return Err(GemmaError::invalid("speculation", "the cache could not drop a rejected draft"));
            }
        }
        if let Taken::Next(id) = taken {
            if self.drafter.wants_hidden() {
                // The row that chose the pending token.
                let width = hidden.len() / (drafted + 1);
                if let Some(h) = hidden.get(accepted * width..(accepted + 1) * width).filter(|h| !h.is_empty()) {
                    self.drafter.set_hidden(h);
                }
            }
            self.feed.push(id);
        }
        Ok(taken)
    }
}
