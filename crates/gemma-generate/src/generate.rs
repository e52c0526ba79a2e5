//! The prefill/decode loop.

use crate::sequence::{FinishReason, GenerateRequest, SequenceState};
use crate::decoding::Decoding;
use crate::speculative::{SpecStats, Taken};
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
    let state = SequenceState::new(req, model.config.vocab_size, ctx)?;
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
    model.forward_media(&req.prompt[start..], &media, &mut session.cache, &mut session.workspace, LogitsMode::Last, adapter)?;
    session.tokens.extend_from_slice(&req.prompt[start..]);
    session.media.extend(req.media.iter().filter(|m| m.at >= start).map(|m| (m.at, m.len(hidden), m.key)));

    // The stepping core the engine's scheduler runs too, with a batch of one.
    let mut dec = Decoding::new(state, req);
    let vocab = model.config.vocab_size;
    let mut emit = |step: &crate::Step| (step.text.is_empty() || on_text(&step.text)) && (step.tail.is_empty() || on_text(&step.tail));
    // Rows of the latest logits: the prompt's last, then each step's feed.
    let mut rows = 1;
    while dec.state.finish().is_none() {
        let (logits, behind) = session.workspace.last_output(rows, vocab, hidden);
        let taken = dec.take(logits, behind, &mut session.cache, tok, &mut emit)?;
        session.tokens.extend_from_slice(dec.kept());
        if !matches!(taken, Taken::Next(_)) {
            break;
        }
        dec.plan(&req.prompt, model, &mut session.cache);
        rows = dec.feed().len();
        if dec.verifies() {
            model.forward_verify(dec.feed(), &mut session.cache, &mut session.workspace, adapter)?;
        } else {
            model.forward_with(dec.feed(), &mut session.cache, &mut session.workspace, LogitsMode::Last, adapter)?;
        }
    }
    let state = &dec.state;
    Ok(Generation {
        tokens: state.generated().to_vec(),
        text: state.text().to_string(),
        finish: state.finish().cloned().unwrap_or(FinishReason::Length),
        prompt_tokens: req.prompt.len(),
        prompt_tokens_computed: req.prompt.len() - start,
        speculation: dec.stats,
    })
}

