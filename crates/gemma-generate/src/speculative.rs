//! Speculative decoding: a drafter proposes the next tokens, one forward
//! verifies them all ([`gemma_model::Model::forward_verify`]: every row as
//! plain decoding computes it), and the sequence takes the verified rows one
//! by one through its ordinary [`crate::SequenceState::step`] until a chosen
//! token differs from the draft.
//!
//! Why the output is exactly plain decoding's: row `i` of the verify step
//! is bit-identical to the logits plain decoding computes after the same
//! tokens, and the sequence state (penalties, grammar, stop strings, the
//! seeded sampler's draws) advances through those rows in the same order,
//! so every choice is the one plain decoding makes — greedy or sampled with
//! a seed. Only the keys and values of rejected draft rows are undone
//! ([`gemma_model::KvCache::truncate`]). For drafts that are a single
//! proposal per position (n-gram lookup, a prediction) taking the target's
//! own draw and comparing it with the draft accepts with probability
//! `p(draft)`, exactly what rejection sampling accepts with for such a
//! drafter, so nothing is lost by keeping the plain draws. A draft model's
//! greedy draft is checked the same way: exact, though under sampling it
//! is accepted less often than rejection sampling would accept it.
//!
//! Gemma 4's MTP assistants ([`gemma_model::Assistant`]) draft from the
//! target's own cache and the final-normed hidden state that chose the
//! pending token, which the driver hands over ([`Drafter::set_hidden`]).

use gemma_model::{Assistant, KvCache, LogitsMode, Model, Workspace};
use std::sync::Arc;

/// Which drafter a sequence uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpecMode {
    /// Plain decoding, one token per forward.
    #[default]
    Off,
    /// Prompt lookup: the continuation of the latest earlier occurrence of
    /// the last few tokens (in the prediction, then in the prompt and the
    /// text so far), as llama.cpp's and vLLM's n-gram modes.
    Ngram,
    /// A smaller model with the same tokenizer drafts greedily
    /// ([`Speculation::draft_model`]; a prediction is still searched first).
    Draft,
    /// A Gemma 4 MTP assistant drafts greedily from the target's keys and
    /// last hidden state ([`DraftModel::Assistant`]).
    Mtp,
}

impl SpecMode {
    /// Parse `off`/`none`, `ngram`, `draft` or `mtp`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "off" | "none" => Some(Self::Off),
            "ngram" => Some(Self::Ngram),
            "draft" => Some(Self::Draft),
            "mtp" => Some(Self::Mtp),
            _ => None,
        }
    }
}

/// How a verify step's rows ended for a sequence ([`take_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// A choice differed from the draft, or the draft was all taken: this
    /// token is chosen and not yet fed.
    Next(u32),
    /// The sequence finished with this step (its tail text is released).
    Finished(crate::Step),
    /// The caller's `emit` asked to stop.
    Cancelled,
}

/// Take the rows of a verify step (`rows`: `[draft.len() + 1, vocab]`,
/// row `i` choosing the token after the `i`-th token fed) through the
/// sequence's ordinary [`crate::SequenceState::step`], in order, handing
/// each step to `emit` (false: cancel), until a choice differs from the
/// draft: the one loop both `generate` and the engine's scheduler run.
/// Returns how many draft tokens were chosen too (their keys and values
/// are valid; the caller drops the rest) and how it ended.
pub fn take_rows(
    state: &mut crate::SequenceState,
    rows: &mut [f32],
    draft: &[u32],
    tok: &gemma_tokenizer::GemmaTokenizer,
    emit: &mut dyn FnMut(&crate::Step) -> bool,
) -> gemma_core::Result<(usize, Taken)> {
    let vocab = rows.len() / (draft.len() + 1);
    let mut accepted = 0;
    for (i, row) in rows.chunks_exact_mut(vocab).enumerate() {
        let step = state.step(row, tok)?;
        if !emit(&step) {
            state.cancel();
            return Ok((accepted, Taken::Cancelled));
        }
        if step.finish.is_some() {
            return Ok((accepted, Taken::Finished(step)));
        }
        if draft.get(i) == Some(&step.id) {
            accepted += 1;
            continue;
        }
        return Ok((accepted, Taken::Next(step.id)));
    }
    Err(gemma_core::GemmaError::invalid("speculation", "a verify step without rows"))
}

/// Default most tokens drafted per step.
pub const DEFAULT_DRAFT_MAX: usize = 8;
/// Longest suffix the n-gram drafter matches.
pub const NGRAM_MAX: usize = 4;
/// Shortest suffix the n-gram drafter matches.
pub const NGRAM_MIN: usize = 2;

/// A sequence's speculative-decoding settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speculation {
    /// The drafter.
    pub mode: SpecMode,
    /// Most tokens drafted per step (the length adapts below it).
    pub draft_max: usize,
    /// Tokens the output is expected to repeat (OpenAI's Predicted Outputs:
    /// an editor sends the file it expects back), searched before the
    /// context.
    pub prediction: Vec<u32>,
    /// The drafting model of [`SpecMode::Draft`] or [`SpecMode::Mtp`].
    pub draft_model: Option<DraftModel>,
}

/// What drafts for a model besides lookups (shared by every sequence).
/// Equal when it is the same one.
#[derive(Clone)]
pub enum DraftModel {
    /// A smaller Gemma with the same tokenizer; each sequence keeps its own
    /// cache of it ([`SpecMode::Draft`]).
    Model(Arc<Model>),
    /// A Gemma 4 MTP assistant bound to the target; it reads the target's
    /// cache ([`SpecMode::Mtp`]).
    Assistant(Arc<Assistant>),
}

impl DraftModel {
    /// The mode this drafter serves.
    pub fn mode(&self) -> SpecMode {
        match self {
            DraftModel::Model(_) => SpecMode::Draft,
            DraftModel::Assistant(_) => SpecMode::Mtp,
        }
    }
}

impl PartialEq for DraftModel {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (DraftModel::Model(a), DraftModel::Model(b)) => Arc::ptr_eq(a, b),
            (DraftModel::Assistant(a), DraftModel::Assistant(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for DraftModel {}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, c) = match self {
            DraftModel::Model(m) => ("DraftModel", &m.config),
            DraftModel::Assistant(a) => ("Assistant", &a.model.config),
        };
        write!(f, "{kind}({}, {} layers)", c.architecture, c.num_layers())
    }
}

impl Default for Speculation {
    fn default() -> Self {
        Self { mode: SpecMode::Off, draft_max: DEFAULT_DRAFT_MAX, prediction: Vec::new(), draft_model: None }
    }
}

impl Speculation {
    /// Whether any drafting happens.
    pub fn is_on(&self) -> bool {
        self.draft_max > 0 && (self.mode != SpecMode::Off || !self.prediction.is_empty())
    }
}

/// Drafted and accepted token counts of one sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Draft tokens sent to verification.
    pub drafted: usize,
    /// Draft tokens the target chose too.
    pub accepted: usize,
    /// Verify forwards run.
    pub steps: usize,
}

/// Proposes tokens (prediction, prompt lookup or a draft model) and adapts
/// how many to the acceptance.
#[derive(Debug)]
pub struct Drafter {
    spec: Speculation,
    /// Tokens drafted next time (1..=draft_max).
    len: usize,
    /// Where in the prediction the output is expected to go on (matches
    /// ending at or after it are preferred, so a prediction that repeats
    /// itself is followed in order).
    cursor: usize,
    /// Start in the prediction of the last draft taken from it.
    from: Option<usize>,
    /// The draft model's state for this sequence.
    model: Option<DraftState>,
    /// The MTP assistant's state for this sequence.
    mtp: Option<MtpState>,
}

/// An MTP assistant's scratch for one sequence and the hidden state it
/// drafts from next.
#[derive(Debug)]
struct MtpState {
    assistant: Arc<Assistant>,
    ws: Workspace,
    /// The target's final-normed hidden state that chose the pending token
    /// (empty: not handed over since the last draft).
    hidden: Vec<f32>,
}

impl MtpState {
    /// `want` greedy tokens after `pending` at the target cache's end.
    fn draft(&mut self, target: &Model, cache: &mut KvCache, pending: u32, want: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(want);
        if self.hidden.len() != target.config.hidden_size {
            return out;
        }
        let pos = cache.len();
        let mut token = pending;
        while out.len() < want {
            let Ok(logits) = self.assistant.step(target, cache, token, pos, &mut self.hidden, &mut self.ws) else { break };
            token = crate::sampling::argmax(logits);
            out.push(token);
        }
        self.hidden.clear();
        out
    }
}

/// A draft model's cache for one sequence and the ids it holds.
#[derive(Debug)]
struct DraftState {
    model: std::sync::Arc<Model>,
    cache: KvCache,
    tokens: Vec<u32>,
    ws: Workspace,
}

impl DraftState {
    /// `want` greedy tokens after `context`, reusing the cached common
    /// prefix (rejected drafts are rolled back). Empty when the draft model
    /// cannot take the context (an id past its vocabulary, its context full).
    fn draft(&mut self, context: &[u32], want: usize) -> Vec<u32> {
        let cfg = &self.model.config;
        if context.is_empty() || context.iter().any(|&t| t as usize >= cfg.vocab_size) || context.len() + want > cfg.max_position_embeddings {
            return Vec::new();
        }
        let common = self.tokens.iter().zip(context).take_while(|(a, b)| a == b).count().min(context.len() - 1);
        if self.cache.truncate(common) {
            self.tokens.truncate(common);
        } else {
            self.cache.clear();
            self.tokens.clear();
        }
        let mut out = Vec::with_capacity(want);
        let new = &context[self.tokens.len()..];
        let Ok(logits) = self.model.forward_with(new, &mut self.cache, &mut self.ws, LogitsMode::Last, None) else { return out };
        self.tokens.extend_from_slice(new);
        let mut next = crate::sampling::argmax(logits);
        while out.len() < want {
            out.push(next);
            if out.len() == want {
                break;
            }
            let Ok(logits) = self.model.forward_with(&[next], &mut self.cache, &mut self.ws, LogitsMode::Last, None) else { break };
            self.tokens.push(next);
            next = crate::sampling::argmax(logits);
        }
        out
    }
}

impl Drafter {
    /// A drafter for `spec`.
    pub fn new(spec: Speculation) -> Self {
        let len = spec.draft_max.max(1);
        let model = match (&spec.mode, &spec.draft_model) {
            (SpecMode::Draft, Some(DraftModel::Model(m))) => Some(DraftState { cache: m.new_cache(), model: Arc::clone(m), tokens: Vec::new(), ws: Workspace::new() }),
            _ => None,
        };
        let mtp = match (&spec.mode, &spec.draft_model) {
            (SpecMode::Mtp, Some(DraftModel::Assistant(a))) => Some(MtpState { assistant: Arc::clone(a), ws: Workspace::new(), hidden: Vec::new() }),
            _ => None,
        };
        Self { spec, len, cursor: 0, from: None, model, mtp }
    }

    /// Whether the driver hands over the target's hidden states
    /// ([`Drafter::set_hidden`]): an MTP assistant drafts from them.
    pub fn wants_hidden(&self) -> bool {
        self.mtp.is_some()
    }

    /// The target's final-normed hidden state `[hidden]` of the row that
    /// chose the pending token (MTP assistants; ignored otherwise).
    pub fn set_hidden(&mut self, hidden: &[f32]) {
        if let Some(m) = &mut self.mtp {
            m.hidden.clear();
            m.hidden.extend_from_slice(hidden);
        }
    }

    /// Up to the current draft length of tokens to follow `context` (the
    /// prompt, the generated tokens and the pending one, in order).
    /// `target`: the model and its cache (every position before the
    /// pending token), which an MTP assistant reads (and leaves as it was).
    pub fn draft(&mut self, context: &[u32], target: Option<(&Model, &mut KvCache)>) -> Vec<u32> {
        self.from = None;
        if !self.spec.is_on() {
            return Vec::new();
        }
        let want = self.len.min(self.spec.draft_max);
        // The prediction first: an edit repeats it from wherever the output now is.
        if let Some((from, d)) = lookup(&self.spec.prediction, context, want, Some(self.cursor)) {
            self.from = Some(from);
            return d;
        }
        if self.spec.mode == SpecMode::Ngram {
            if let Some((_, d)) = lookup(context, context, want, None) {
                return d;
            }
        }
        if let Some(m) = &mut self.model {
            return m.draft(context, want);
        }
        match (&mut self.mtp, target, context.last()) {
            (Some(m), Some((model, cache)), Some(&pending)) if cache.len() + 1 == context.len() => m.draft(model, cache, pending, want),
            _ => Vec::new(),
        }
    }

    /// Record that `accepted` of `drafted` tokens were taken: all taken
    /// grows the next draft, a rejection shrinks it to what was taken + 1.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        if let Some(from) = self.from.take() {
            self.cursor = from + accepted;
        }
        if drafted == 0 {
            return;
        }
        self.len = if accepted == drafted { (self.len + 2).min(self.spec.draft_max) } else { (accepted + 1).min(self.spec.draft_max) };
        self.len = self.len.max(1);
    }
}

/// Where a draft starts in `corpus` and its tokens: what follows an
/// occurrence of the longest suffix of `context` (NGRAM_MAX tokens down to
/// NGRAM_MIN; down to 1 in a prediction), at most `want` tokens.
/// In the context itself (`cursor` None) the latest earlier occurrence is
/// taken; in a prediction the first one ending at or after `cursor`, else
/// the latest.
fn lookup(corpus: &[u32], context: &[u32], want: usize, cursor: Option<usize>) -> Option<(usize, Vec<u32>)> {
    if corpus.is_empty() || context.is_empty() || want == 0 {
        return None;
    }
    let min = if cursor.is_some() { 1 } else { NGRAM_MIN };
    for n in (min..=NGRAM_MAX.min(context.len())).rev() {
        let suffix = &context[context.len() - n..];
        // Occurrences with at least one token after them (in the context,
        // not the suffix's own place).
        let last_start = match cursor {
            None => context.len().checked_sub(n + 1),
            Some(_) => corpus.len().checked_sub(n + 1),
        };
        let Some(last_start) = last_start else { continue };
        let mut found = (0..=last_start).filter(|&s| &corpus[s..s + n] == suffix);
        let s = match cursor {
            Some(c) => {
                let all: Vec<usize> = found.collect();
                all.iter().copied().find(|&s| s + n >= c).or(all.last().copied())
            }
            None => found.next_back(),
        };
        if let Some(s) = s {
            let from = s + n;
            return Some((from, corpus[from..(from + want).min(corpus.len())].to_vec()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafter(mode: SpecMode, max: usize, prediction: &[u32]) -> Drafter {
        Drafter::new(Speculation { mode, draft_max: max, prediction: prediction.to_vec(), draft_model: None })
    }

    #[test]
    fn ngram_lookup_continues_the_latest_match() {
        let mut d = drafter(SpecMode::Ngram, 3, &[]);
        // "1 2 3 4 5 ... 1 2 3 9 ... 1 2 3" → the latest "1 2 3" is followed by 9.
        assert_eq!(d.draft(&[1, 2, 3, 4, 5, 7, 1, 2, 3, 9, 8, 1, 2, 3], None), vec![9, 8, 1]);
        // Only a 2-gram matches.
        assert_eq!(d.draft(&[5, 6, 7, 8, 0, 7, 8], None), vec![0, 7, 8]);
        // Single tokens are not enough, nor is the suffix itself.
        assert!(d.draft(&[1, 2, 3, 4, 3], None).is_empty());
        assert!(d.draft(&[1, 2], None).is_empty());
        assert!(drafter(SpecMode::Off, 3, &[]).draft(&[1, 2, 3, 1, 2], None).is_empty());
        // Occurrences of the suffix that end the context have nothing after them.
        assert_eq!(d.draft(&[7, 7, 7, 7, 7], None), vec![7]);
    }

    #[test]
    fn the_prediction_is_searched_first() {
        let mut d = drafter(SpecMode::Off, 4, &[10, 11, 12, 13, 14, 15]);
        assert_eq!(d.draft(&[1, 2, 12], None), vec![13, 14, 15]);
        assert_eq!(d.draft(&[1, 11, 12], None), vec![13, 14, 15]);
        // Nothing matches: no draft (Off does not search the context).
        assert!(d.draft(&[1, 2, 3, 1, 2], None).is_empty());
        let mut both = drafter(SpecMode::Ngram, 2, &[10, 11, 12]);
        assert_eq!(both.draft(&[1, 2, 3, 1, 2], None), vec![3, 1]);
    }

    /// A prediction that repeats itself is followed in order: the match
    /// at or after the cursor (where the last accepted draft ended).
    #[test]
    fn a_repeating_prediction_is_followed_in_order() {
        let p = [1, 2, 9, 1, 2, 8, 1, 2, 7];
        let mut d = drafter(SpecMode::Off, 2, &p);
        assert_eq!(d.draft(&[0, 1, 2], None), vec![9, 1]);
        d.update(2, 2);
        assert_eq!(d.draft(&[0, 1, 2, 9, 1, 2], None), vec![8, 1]);
        d.update(2, 2);
        assert_eq!(d.draft(&[0, 1, 2, 9, 1, 2, 8, 1, 2], None), vec![7]);
    }

    #[test]
    fn draft_length_adapts() {
        let mut d = drafter(SpecMode::Ngram, 6, &[]);
        let ctx: Vec<u32> = (0..20).chain(0..3).collect();
        assert_eq!(d.draft(&ctx, None).len(), 6);
        d.update(6, 1);
        assert_eq!(d.draft(&ctx, None).len(), 2);
        d.update(2, 2);
        assert_eq!(d.draft(&ctx, None).len(), 4);
        d.update(4, 0);
        assert_eq!(d.draft(&ctx, None).len(), 1);
        for _ in 0..5 {
            d.update(1, 1);
        }
        assert_eq!(d.draft(&ctx, None).len(), 6);
    }
}
