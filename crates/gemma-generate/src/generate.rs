//! The prefill/decode loop.

use crate::sequence::{FinishReason, GenerateRequest, SequenceState};
use crate::speculative::{take_rows, Drafter, SpecStats, Taken};
use gemma_core::Result;
use gemma_model::{KvCache, LogitsMode, Media, Model, Workspace};
use gemma_tokenizer::GemmaTokenizer;

/// A conversation's state: the KV cache and the ids it holds (plus the
/// activation workspace its calls reuse). Reusing a session skips
/// re-processing a prompt's shared prefix (multi-turn chat).
#[derive(Debug, Clone)]
pub struct Session {
    /// The KV cache.
    pub cache: KvCache,
    /// Ids whose keys/values are in the cache, in order.
    pub tokens: Vec<u32>,
    /// Per-call activation buffers (not state: any workspace would do).
    pub workspace: Workspace,
    /// The per-request adapter the cache was computed with.
    pub adapter: Option<crate::sequence::Adapter>,
    /// The media runs in the cache: `(at, len, content key)`.
    pub media: Vec<(usize, usize, [u8; 32])>,
}

impl Session {
    /// An empty session for `model`.
    pub fn new(model: &Model) -> Self {
        Self { cache: model.new_cache(), tokens: Vec::new(), workspace: Workspace::new(), adapter: None, media: Vec::new() }
    }

    /// Forget the conversation.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.tokens.clear();
        self.media.clear();
    }

    /// How many of `req`'s prompt positions the session holds: the common
    /// prefix of the ids, cut before the first media run that is not the
    /// same run of the same content in both (at least one prompt token is
    /// left to compute, for fresh logits).
    fn reusable(&self, req: &GenerateRequest, hidden: usize) -> usize {
        let mut common = self.tokens.iter().zip(&req.prompt).take_while(|(a, b)| a == b).count().min(req.prompt.len() - 1);
        let wanted: Vec<(usize, usize, [u8; 32])> = req.media.iter().map(|m| (m.at, m.len(hidden), m.key)).collect();
        for (run, other) in [(&wanted, &self.media), (&self.media, &wanted)] {
            for &(at, len, key) in run.iter() {
                if at < common && !(at + len <= common && other.contains(&(at, len, key))) {
                    common = at;
                }
            }
        }
        common
    }
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids (a final stop id excluded).
    pub tokens: Vec<u32>,
    /// Generated text (stop strings cut).
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Number of prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the session).
    pub prompt_tokens_computed: usize,
    /// Drafted and accepted tokens (speculative decoding; zeros without).
    pub speculation: SpecStats,
}

/// Generate a continuation of `req.prompt`, calling `on_text` with each new
/// piece of text as soon as it is final; `on_text` returns false to stop
/// early. The session's cache is reused for a shared prefix. Every decision
/// per token is the [`SequenceState`]'s, as in the serving engine.
pub fn generate(
    model: &Model,
    tok: &GemmaTokenizer,
    session: &mut Session,
    req: &GenerateRequest,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let ctx = model.config.max_position_embeddings;
    let mut state = SequenceState::new(req, model.config.vocab_size, ctx)?;
    let adapter = req.adapter.as_ref().map(|a| &*a.lora);
    // Keys and values computed under another adapter are not this one's.
    if session.adapter != req.adapter {
        session.reset();
        session.adapter = req.adapter.clone();
    }

    // Reuse the cached prefix when the session holds a prefix of this prompt
    // (media included). At least one prompt token is recomputed to get fresh logits.
    let hidden = model.config.hidden_size;
    let common = session.reusable(req, hidden);
    if session.cache.truncate(common) {
        session.tokens.truncate(common);
        session.media.retain(|&(at, len, _)| at + len <= common);
    } else {
        session.reset();
    }
    let start = session.tokens.len();
    let media: Vec<Media> = req.media.iter().filter(|m| m.at >= start).map(|m| Media { at: m.at, rows: &m.rows }).collect();
    let mut logits = model.forward_media(&req.prompt[start..], &media, &mut session.cache, &mut session.workspace, LogitsMode::Last, adapter)?;
    session.tokens.extend_from_slice(&req.prompt[start..]);
    session.media.extend(req.media.iter().filter(|m| m.at >= start).map(|m| (m.at, m.len(hidden), m.key)));
    let emit = |s: &str, on_text: &mut dyn FnMut(&str) -> bool| s.is_empty() || on_text(s);

    let spec = if req.speculation.is_on() {
        let first = logits.to_vec();
        speculate(model, tok, session, &mut state, first, req, on_text)?
    } else {
        while state.finish().is_none() {
            let step = state.step(logits, tok)?;
            if !emit(&step.text, on_text) || !emit(&step.tail, on_text) {
                state.cancel();
                break;
            }
            if step.finish.is_some() {
                break;
            }
            logits = model.forward_with(&[step.id], &mut session.cache, &mut session.workspace, LogitsMode::Last, adapter)?;
            session.tokens.push(step.id);
        }
        SpecStats::default()
    };
    Ok(Generation {
        tokens: state.generated().to_vec(),
        text: state.text().to_string(),
        finish: state.finish().cloned().unwrap_or(FinishReason::Length),
        prompt_tokens: req.prompt.len(),
        prompt_tokens_computed: req.prompt.len() - start,
        speculation: spec,
    })
}

/// Decode with drafts (see [`crate::speculative`]) from the logits `first`
/// of the last prompt token until `state` finishes; the session keeps only
/// the keys and values of chosen tokens.
fn speculate(
    model: &Model,
    tok: &GemmaTokenizer,
    session: &mut Session,
    state: &mut SequenceState,
    mut first: Vec<f32>,
    req: &GenerateRequest,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<SpecStats> {
    let adapter = req.adapter.as_ref().map(|a| &*a.lora);
    let ctx = model.config.max_position_embeddings;
    let mut drafter = Drafter::new(req.speculation.clone());
    let mut stats = SpecStats::default();
    let mut draft: Vec<u32> = Vec::new();
    let Session { cache, tokens, workspace, .. } = session;
    let mut verified: Option<&mut [f32]> = None;
    let hidden = model.config.hidden_size;
    // Rows of the last logits (the prompt's last; then each verify step's).
    let mut fed = 1;
    loop {
        let rows: &mut [f32] = match verified.take() {
            Some(r) => r,
            None => &mut first[..],
        };
        // Row i chooses the token after verify[i]: the pending token's
        // successor first, then each draft token's.
        let (accepted, taken) = take_rows(state, rows, &draft, tok, &mut |step| {
            (step.text.is_empty() || on_text(&step.text)) && (step.tail.is_empty() || on_text(&step.tail))
        })?;
        // The chosen draft tokens' keys and values are in the cache already.
        tokens.extend_from_slice(&draft[..accepted]);
        let pending = match taken {
            Taken::Next(id) => Some(id),
            Taken::Finished(_) | Taken::Cancelled => None,
        };
        stats.accepted += accepted;
        drafter.update(draft.len(), accepted);
        if drafter.wants_hidden() && matches!(taken, Taken::Next(_)) {
            // The row that chose the pending token.
            drafter.set_hidden(&workspace.head_input(fed, hidden)[accepted * hidden..(accepted + 1) * hidden]);
        }
        // Rejected draft rows out of the cache (at most the draft's length,
        // within every sliding ring's slack).
        if !cache.truncate(tokens.len()) {
            return Err(gemma_core::GemmaError::invalid("speculation", "the cache could not drop a rejected draft"));
        }
        let Some(id) = pending.filter(|_| state.finish().is_none()) else { break };
        let mut context = Vec::with_capacity(tokens.len() + 1);
        context.extend_from_slice(tokens);
        context.push(id);
        draft = drafter.draft(&context, Some((model, &mut *cache)));
        let room = ctx.saturating_sub(tokens.len() + 1);
        draft.truncate(state.remaining().saturating_sub(1).min(room).min(gemma_model::MAX_CHUNK - 1));
        let mut verify = Vec::with_capacity(draft.len() + 1);
        verify.push(id);
        verify.extend_from_slice(&draft);
        fed = verify.len();
        verified = Some(model.forward_verify(&verify, cache, workspace, adapter)?);
        tokens.push(id);
        stats.drafted += draft.len();
        stats.steps += 1;
    }
    Ok(stats)
}
