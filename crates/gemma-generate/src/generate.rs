//! The prefill/decode loop.

use crate::detokenize::TokenStreamDecoder;
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopStrings;
use gemma_core::{GemmaError, Result};
use gemma_model::{KvCache, LogitsMode, Model};
use gemma_tokenizer::GemmaTokenizer;

/// A conversation's state: the KV cache and the ids it holds. Reusing a
/// session skips re-processing a prompt's shared prefix (multi-turn chat).
#[derive(Debug, Clone)]
pub struct Session {
    /// The KV cache.
    pub cache: KvCache,
    /// Ids whose keys/values are in the cache, in order.
    pub tokens: Vec<u32>,
}

impl Session {
    /// An empty session for `model`.
    pub fn new(model: &Model) -> Self {
        Self { cache: model.new_cache(), tokens: Vec::new() }
    }

    /// Forget the conversation.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The full prompt, BOS included when the model wants it.
    pub prompt: Vec<u32>,
    /// Sampling settings.
    pub params: SamplingParams,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Ids that end generation (not included in the output text).
    pub stop_ids: Vec<u32>,
    /// Strings that end generation (cut from the output text).
    pub stop_strings: Vec<String>,
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
    /// The callback asked to stop.
    Cancelled,
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
}

/// Generate a continuation of `req.prompt`, calling `on_text` with each new
/// piece of text as soon as it is complete UTF-8; `on_text` returns false to
/// stop early. The session's cache is reused for a shared prefix.
pub fn generate(
    model: &Model,
    tok: &GemmaTokenizer,
    session: &mut Session,
    req: &GenerateRequest,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    if req.prompt.is_empty() {
        return Err(GemmaError::invalid("prompt", "the prompt has no tokens"));
    }
    let mut sampler = Sampler::new(req.params.clone())?;
    let ctx = model.config.max_position_embeddings;
    if req.prompt.len() >= ctx {
        return Err(GemmaError::invalid("prompt", format!("{} tokens leave no room in the model's context of {ctx}", req.prompt.len())));
    }

    // Reuse the cached prefix when the session holds a prefix of this prompt.
    // At least one prompt token is recomputed to get fresh logits.
    let common = session.tokens.iter().zip(&req.prompt).take_while(|(a, b)| a == b).count().min(req.prompt.len() - 1);
    if session.cache.truncate(common) {
        session.tokens.truncate(common);
    } else {
        session.reset();
    }
    let start = session.tokens.len();
    let mut logits = model.forward_into(&req.prompt[start..], &mut session.cache, LogitsMode::Last)?;
    session.tokens.extend_from_slice(&req.prompt[start..]);

    let mut decoder = TokenStreamDecoder::new();
    let mut stops = StopStrings::new(&req.stop_strings);
    let mut tokens = Vec::new();
    let mut context: Vec<u32> = req.prompt.clone();
    let emit = |s: &str, on_text: &mut dyn FnMut(&str) -> bool| if s.is_empty() { true } else { on_text(s) };

    let mut finish = loop {
        if tokens.len() >= req.max_new_tokens {
            break FinishReason::Length;
        }
        let next = sampler.sample(logits, &context);
        if req.stop_ids.contains(&next) {
            break FinishReason::StopToken(next);
        }
        tokens.push(next);
        context.push(next);
        if let Some(piece) = decoder.push(tok, next)? {
            let check = stops.push(&piece);
            if !emit(&check.emit, on_text) {
                break FinishReason::Cancelled;
            }
            if let Some(s) = check.stopped {
                break FinishReason::StopString(s);
            }
        }
        if tokens.len() >= req.max_new_tokens {
            break FinishReason::Length;
        }
        if session.tokens.len() + 1 > ctx {
            break FinishReason::ContextFull;
        }
        logits = model.forward_into(&[next], &mut session.cache, LogitsMode::Last)?;
        session.tokens.push(next);
    };
    if !matches!(finish, FinishReason::StopString(_) | FinishReason::Cancelled) {
        if let Some(piece) = decoder.flush(tok)? {
            let check = stops.push(&piece);
            emit(&check.emit, on_text);
            if let Some(s) = check.stopped {
                finish = FinishReason::StopString(s);
            }
        }
        if !matches!(finish, FinishReason::StopString(_)) {
            let rest = stops.finish();
            emit(&rest, on_text);
        }
    }
    Ok(Generation {
        tokens,
        text: stops.text().to_string(),
        finish,
        prompt_tokens: req.prompt.len(),
        prompt_tokens_computed: req.prompt.len() - start,
    })
}
