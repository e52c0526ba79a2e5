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

/// Default number of leading token ids a draft model scores
/// ([`DraftLm::new`]); with a Gemma tokenizer's single-character pieces
/// (which sit at the end of its vocabulary) they cover about 92% of the
/// tokens of English prose and code (docs/SERVING.md).
pub const DEFAULT_DRAFT_VOCAB: usize = 32768;

/// A draft model and the part of its output head it scores: a 262k-row
/// head is most of what a small Gemma reads per token, and a draft only
/// needs the likely tokens (a draft outside them is rejected like any
/// other wrong one: the output does not change).
#[derive(Debug)]
pub struct DraftLm {
    /// The model.
    pub model: Model,
    /// The rows it scores, when fewer than the whole vocabulary.
    head: Option<DraftHead>,
}

/// A part of a head: its first rows (mapped as they are) and a copy of
/// some rows after them.
#[derive(Debug)]
struct DraftHead {
    /// Rows `0..first.rows`.
    first: gemma_core::Matrix,
    /// The rows of `extra_ids`.
    extra: gemma_core::Matrix,
    extra_ids: Vec<u32>,
}

impl DraftLm {
    /// `model` scoring token ids `0..vocab` and `extra` (ids past `vocab`;
    /// others are ignored), plus every id a sequence's context holds;
    /// `vocab` 0 or at least the model's vocabulary: every id.
    pub fn new(model: Model, vocab: usize, extra: &[u32]) -> Self {
        let head = model.weights.head();
        let head = (vocab > 0 && vocab < head.rows).then(|| {
            let mut extra_ids: Vec<u32> = extra.iter().copied().filter(|&i| i as usize >= vocab && (i as usize) < head.rows).collect();
            extra_ids.sort_unstable();
            extra_ids.dedup();
            DraftHead { first: head.first_rows(vocab), extra: head.rows_of(&extra_ids), extra_ids }
        });
        Self { model, head }
    }

    /// How many ids it drafts from besides those of a sequence's context.
    pub fn vocab(&self) -> usize {
        self.head.as_ref().map_or(self.model.config.vocab_size, |h| h.first.rows + h.extra.rows)
    }

    /// Add the ids of `tokens` it does not score already to `seen`.
    fn see(&self, tokens: &[u32], seen: &mut Seen) {
        let Some(head) = &self.head else { return };
        let before = seen.ids.len();
        for &t in tokens {
            let known = (t as usize) < head.first.rows || head.extra_ids.binary_search(&t).is_ok() || (t as usize) >= self.model.config.vocab_size;
            if !known && seen.ids[..before].binary_search(&t).is_err() {
                seen.ids.push(t);
            }
        }
        if seen.ids.len() > before {
            seen.ids.sort_unstable();
            seen.ids.dedup();
            seen.rows = Some(self.model.weights.head().rows_of(&seen.ids));
        }
    }

    /// The most likely next id after `tokens` (appended to `cache`) among
    /// those it scores and `seen`, after the request's penalties (`pen`:
    /// the penalties, the context, scratch): the argmax of the model's own
    /// logits over those ids (the first of equal ones, in id order within
    /// each part).
    fn next(&self, tokens: &[u32], cache: &mut KvCache, ws: &mut Workspace, scores: &mut Vec<f32>, seen: &Seen, pen: (&DraftPenalties, &[u32], &mut Vec<(u32, u32)>)) -> Option<u32> {
        let (penalties, context, counts) = pen;
        let Some(head) = &self.head else {
            let logits = self.model.forward_with(tokens, cache, ws, LogitsMode::Last, None).ok()?;
            penalties.apply(context, logits, |id| Some(id as usize), counts);
            return Some(crate::sampling::argmax(logits));
        };
        let h = self.model.forward_last_hidden(tokens, cache, ws).ok()?;
        let (n, e) = (head.first.rows, head.extra.rows);
        scores.resize(n + e + seen.ids.len(), 0.0);
        let (first, rest) = scores.split_at_mut(n);
        let (extra, ctx) = rest.split_at_mut(e);
        gemma_kernels::matmul(h, 1, &head.first, first);
        gemma_kernels::matmul(h, 1, &head.extra, extra);
        if let Some(rows) = &seen.rows {
            gemma_kernels::matmul(h, 1, rows, ctx);
        }
        // As the full logits: the penalties act on soft-capped values.
        if let Some(cap) = self.model.config.final_softcap {
            gemma_kernels::softcap(scores, cap);
        }
        let index = |id: u32| match id as usize {
            i if i < n => Some(i),
            _ => head.extra_ids.binary_search(&id).ok().map(|j| n + j).or_else(|| seen.ids.binary_search(&id).ok().map(|j| n + e + j)),
        };
        penalties.apply(context, scores, index, counts);
        let best = crate::sampling::argmax(scores) as usize;
        Some(match best {
            b if b < n => b as u32,
            b if b < n + e => head.extra_ids[b - n],
            b => seen.ids[b - n - e],
        })
    }
}

/// The penalties a draft model applies to its own scores, as the request's
/// sampler applies them to the target's logits, so that its greedy draft
/// follows a penalized target (a base model's free text needs a repetition
/// penalty, and an unpenalized draft is rejected wherever it bites).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DraftPenalties {
    /// transformers' repetition penalty over the whole context (1: none).
    pub repetition: f32,
    /// OpenAI's presence penalty over the generated tokens.
    pub presence: f32,
    /// OpenAI's frequency penalty over the generated tokens.
    pub frequency: f32,
    /// Where the generated tokens start in the context.
    pub prompt_len: usize,
}

impl Default for DraftPenalties {
    fn default() -> Self {
        Self { repetition: 1.0, presence: 0.0, frequency: 0.0, prompt_len: 0 }
    }
}

impl DraftPenalties {
    /// The penalties of `req`.
    pub fn of(req: &crate::GenerateRequest) -> Self {
        Self { repetition: req.params.repetition_penalty, presence: req.presence_penalty, frequency: req.frequency_penalty, prompt_len: req.prompt.len() }
    }

    fn is_on(&self) -> bool {
        self.repetition != 1.0 || self.presence != 0.0 || self.frequency != 0.0
    }

    /// Apply to `scores` after `context`: each distinct id's score at
    /// `index(id)` (None: not scored), as the sampler's processors do.
    fn apply(&self, context: &[u32], scores: &mut [f32], index: impl Fn(u32) -> Option<usize>, counts: &mut Vec<(u32, u32)>) {
        if !self.is_on() {
            return;
        }
        // (id, times generated) of each distinct id, sorted by id.
        counts.clear();
        counts.extend(context.iter().enumerate().map(|(i, &t)| (t, (i >= self.prompt_len) as u32)));
        counts.sort_unstable();
        counts.dedup_by(|b, a| {
            let same = a.0 == b.0;
            if same {
                a.1 += b.1;
            }
            same
        });
        for &(id, n) in counts.iter() {
            let Some(s) = index(id).and_then(|i| scores.get_mut(i)) else { continue };
            if self.repetition != 1.0 {
                *s = if *s > 0.0 { *s / self.repetition } else { *s * self.repetition };
            }
            if n > 0 {
                *s -= self.presence + self.frequency * n as f32;
            }
        }
    }
}

/// The ids of a sequence's context that a [`DraftLm`] does not score
/// already, and their head rows.
#[derive(Debug, Default)]
struct Seen {
    /// Sorted.
    ids: Vec<u32>,
    rows: Option<gemma_core::Matrix>,
}

/// What drafts for a model besides lookups (shared by every sequence).
/// Equal when it is the same one.
#[derive(Clone)]
pub enum DraftModel {
    /// A smaller Gemma with the same tokenizer; each sequence keeps its own
    /// cache of it ([`SpecMode::Draft`]).
    Model(Arc<DraftLm>),
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
            DraftModel::Model(m) => ("DraftModel", &m.model.config),
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
    draft: Arc<DraftLm>,
    cache: KvCache,
    tokens: Vec<u32>,
    ws: Workspace,
    /// Scores of the draft's head rows.
    scores: Vec<f32>,
    /// Context ids outside the draft's vocabulary, scored too.
    seen: Seen,
    /// The request's penalties, and the context they count (with the
    /// tokens drafted so far).
    penalties: DraftPenalties,
    counted: Vec<u32>,
    counts: Vec<(u32, u32)>,
}

impl DraftState {
    /// `want` greedy tokens after `context`, reusing the cached common
    /// prefix (rejected drafts are rolled back). Empty when the draft model
    /// cannot take the context (an id past its vocabulary, its context full).
    fn draft(&mut self, context: &[u32], want: usize) -> Vec<u32> {
        let cfg = &self.draft.model.config;
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
        self.draft.see(new, &mut self.seen);
        self.counted.clear();
        self.counted.extend_from_slice(context);
        let pen = (&self.penalties, &self.counted[..], &mut self.counts);
        let Some(mut next) = self.draft.next(new, &mut self.cache, &mut self.ws, &mut self.scores, &self.seen, pen) else { return out };
        self.tokens.extend_from_slice(new);
        while out.len() < want {
            out.push(next);
            if out.len() == want {
                break;
            }
            self.counted.push(next);
            let pen = (&self.penalties, &self.counted[..], &mut self.counts);
            let Some(n) = self.draft.next(&[next], &mut self.cache, &mut self.ws, &mut self.scores, &self.seen, pen) else { break };
            self.tokens.push(next);
            next = n;
        }
        out
    }
}

impl Drafter {
    /// A drafter for `spec`.
    pub fn new(spec: Speculation) -> Self {
        let len = spec.draft_max.max(1);
        let model = match (&spec.mode, &spec.draft_model) {
            (SpecMode::Draft, Some(DraftModel::Model(m))) => Some(DraftState { cache: m.model.new_cache(), draft: Arc::clone(m), tokens: Vec::new(), ws: Workspace::new(), scores: Vec::new(), seen: Seen::default(), penalties: DraftPenalties::default(), counted: Vec::new(), counts: Vec::new() }),
            _ => None,
        };
        let mtp = match (&spec.mode, &spec.draft_model) {
            (SpecMode::Mtp, Some(DraftModel::Assistant(a))) => Some(MtpState { assistant: Arc::clone(a), ws: Workspace::new(), hidden: Vec::new() }),
            _ => None,
        };
        Self { spec, len, cursor: 0, from: None, model, mtp }
    }

    /// A draft model penalizes its drafts with `penalties` (those of the
    /// request; other drafters ignore them).
    pub fn with_penalties(mut self, penalties: DraftPenalties) -> Self {
        if let Some(m) = &mut self.model {
            m.penalties = penalties;
        }
        self
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

    /// A draft's penalties equal the sampler's processors over the same
    /// context (prompt, then generated tokens), value for value, for ids
    /// scored where they sit and for ids not scored (left alone).
    #[test]
    fn draft_penalties_equal_the_samplers_processors() {
        use crate::processors::{LogitsProcessor, PresenceFrequencyPenalty, RepetitionPenalty};
        let vocab = 40;
        let prompt = [2u32, 7, 7, 11, 30];
        let generated = [7u32, 12, 12, 12, 5, 30];
        let logits: Vec<f32> = (0..vocab).map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0).collect();
        let mut want = logits.clone();
        let mut rep = RepetitionPenalty::new(1.3, vocab, &prompt);
        let mut pf = PresenceFrequencyPenalty::new(0.4, 0.25);
        for &t in &generated {
            rep.accept(t).unwrap();
            pf.accept(t).unwrap();
        }
        rep.apply(&mut want).unwrap();
        pf.apply(&mut want).unwrap();
        let pen = DraftPenalties { repetition: 1.3, presence: 0.4, frequency: 0.25, prompt_len: prompt.len() };
        let context: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
        let mut got = logits.clone();
        pen.apply(&context, &mut got, |id| Some(id as usize), &mut Vec::new());
        assert_eq!(got, want);
        // Scores of a part of the vocabulary: ids below 20 at their place,
        // 30 at index 20, the rest not scored.
        let mut part: Vec<f32> = logits[..20].iter().chain([&logits[30]]).copied().collect();
        pen.apply(&context, &mut part, |id| if id < 20 { Some(id as usize) } else { (id == 30).then_some(20) }, &mut Vec::new());
        assert_eq!(part, want[..20].iter().chain([&want[30]]).copied().collect::<Vec<_>>());
        let mut none = logits.clone();
        DraftPenalties::default().apply(&context, &mut none, |id| Some(id as usize), &mut Vec::new());
        assert_eq!(none, logits);
    }

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
