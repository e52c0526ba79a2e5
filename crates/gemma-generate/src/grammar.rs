//! Constrained decoding: a grammar (a JSON schema, any JSON object, a
//! regex, or a Lark grammar) compiled by `llguidance` over the model's own
//! token bytes, applied as one more logits processor. Tokens the grammar
//! cannot take next get `-inf`; the stop ids (`<eos>`, `<end_of_turn>`) are
//! allowed exactly when the grammar may end here.
//!
//! [`GrammarCompiler`] is built once per tokenizer (its token trie covers
//! the whole vocabulary); [`GrammarCompiler::compile`] turns a [`Grammar`]
//! into a [`Constraint`] (errors name what is wrong, before any model work);
//! each sequence gets its own matcher from it.

use crate::processors::LogitsProcessor;
use gemma_core::{GemmaError, Result};
use gemma_tokenizer::GemmaTokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object (OpenAI `json_object`, TGI `json` without a schema).
    JsonObject,
    /// A JSON schema (draft 2020-12 subset that llguidance supports).
    JsonSchema(serde_json::Value),
    /// A regular expression (Rust `regex` syntax) the whole output matches.
    Regex(String),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
}

impl Grammar {
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(bounded_whitespace(serde_json::json!({"type": "object"}))),
            Grammar::JsonSchema(s) => TopLevelGrammar::from_json_schema(bounded_whitespace(s.clone())),
            Grammar::Regex(r) => TopLevelGrammar::from_regex(r),
            Grammar::Lark(l) => TopLevelGrammar::from_lark(l.clone()),
        }
    }

    /// A short name for messages (`json_schema`, `regex`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonObject => "json_object",
            Grammar::JsonSchema(_) => "json_schema",
            Grammar::Regex(_) => "regex",
            Grammar::Lark(_) => "lark",
        }
    }
}

/// Whitespace between JSON tokens: at most one newline and 20 spaces or
/// tabs per gap (pretty-printing stays possible; a small model cannot loop
/// on whitespace until `max_tokens`). A schema's own `x-guidance` wins.
pub const JSON_WHITESPACE: &str = r"(\x0A?[\x20\x09]{1,20}|\x0A)";

/// `schema` with no whitespace allowed between JSON tokens (compact output:
/// `{"a":1,"b":[2,3]}`), for machine-read JSON such as tool calls.
pub fn json_without_whitespace(mut schema: serde_json::Value) -> serde_json::Value {
    if schema.is_object() {
        let opts = llguidance::JsonCompileOptions { whitespace_flexible: false, ..Default::default() };
        opts.apply_to(&mut schema);
    }
    schema
}

fn bounded_whitespace(mut schema: serde_json::Value) -> serde_json::Value {
    if schema.is_object() && schema.get("x-guidance").is_none() {
        let opts = llguidance::JsonCompileOptions { whitespace_pattern: Some(JSON_WHITESPACE.to_string()), ..Default::default() };
        opts.apply_to(&mut schema);
    }
    schema
}

/// The tokenizer as llguidance sees it: each id's bytes (control tokens
/// as `0xFF` + name, so no text ever produces them).
struct GemmaTokEnv {
    trie: TokTrie,
}

impl TokenizerEnv for GemmaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Only for forced text, which we never feed: greedy over the trie.
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// The bytes llguidance matches for token `id`.
fn token_bytes(tok: &GemmaTokenizer, id: u32) -> Vec<u8> {
    let piece = tok.id_to_token(id).unwrap_or_default();
    if tok.is_control(id) {
        let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        b.extend_from_slice(piece.as_bytes());
        return b;
    }
    if piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
        if let Ok(byte) = u8::from_str_radix(&piece[3..5], 16) {
            return vec![byte];
        }
    }
    piece.replace('\u{2581}', " ").into_bytes()
}

/// Compiles grammars for one tokenizer (build once: ~a second for a
/// 262k-token vocabulary).
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    stop_ids: Vec<u32>,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler").field("stop_ids", &self.stop_ids).finish()
    }
}

impl GrammarCompiler {
    /// The token trie of `tok`'s vocabulary.
    pub fn new(tok: &GemmaTokenizer) -> Result<Self> {
        let n = tok.vocab_size();
        let eos = tok.token_to_id(&tok.eos_token).or_else(|| tok.stop_ids.first().copied()).unwrap_or(1);
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = Some(tok.bos_id);
        info.tok_end_of_turn = tok.token_to_id("<end_of_turn>");
        let words: Vec<Vec<u8>> = (0..n as u32).map(|id| token_bytes(tok, id)).collect();
        let trie = TokTrie::from(&info, &words);
        let stop_ids = tok.stop_ids.clone();
        let env: TokEnv = Arc::new(GemmaTokEnv { trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GemmaError::invalid("grammar", format!("cannot index the vocabulary: {e}")))?;
        factory.quiet();
        Ok(Self { factory: Arc::new(factory), stop_ids })
    }

    /// Compile `grammar`; errors (an invalid or unsupported schema, a
    /// regex or grammar that matches nothing) name the problem.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let t = Instant::now();
        let bad = |e: String| GemmaError::invalid(grammar.kind(), e);
        let parser = self.factory.create_parser(grammar.top_level()).map_err(|e| bad(e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad(e));
        }
        // A grammar that allows no first token and cannot end is unusable.
        let mask = matcher.compute_mask().map_err(|e| bad(e.to_string()))?;
        let eos = self.factory.tok_env().tok_trie().eos_token();
        if mask.num_set() == 0 || (mask.num_set() == 1 && mask.is_allowed(eos) && !matcher.is_accepting().unwrap_or(false)) {
            return Err(bad("the grammar matches nothing".into()));
        }
        matcher.reset().map_err(|e| bad(e.to_string()))?;
        Ok(Constraint {
            grammar: grammar.clone(),
            pristine: Arc::new(Mutex::new(matcher)),
            stop_ids: self.stop_ids.clone(),
            compile_seconds: t.elapsed().as_secs_f64(),
            stats: Arc::new(GrammarStats::default()),
            full_masks: false,
        })
    }
}

/// A compiled grammar, ready to constrain any number of sequences.
#[derive(Clone)]
pub struct Constraint {
    grammar: Grammar,
    pristine: Arc<Mutex<Matcher>>,
    stop_ids: Vec<u32>,
    /// Seconds the compilation took.
    pub compile_seconds: f64,
    stats: Arc<GrammarStats>,
    full_masks: bool,
}

/// Work done by every sequence a constraint has decoded (shared counters).
#[derive(Debug, Default)]
pub struct GrammarStats {
    masks: AtomicU64,
    mask_nanos: AtomicU64,
    max_mask_nanos: AtomicU64,
    checks: AtomicU64,
    check_nanos: AtomicU64,
    skipped: AtomicU64,
}

/// A snapshot of [`GrammarStats`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GrammarCounts {
    /// Full masks computed.
    pub masks: u64,
    /// Seconds spent computing them.
    pub mask_seconds: f64,
    /// The slowest one, in seconds.
    pub max_mask_seconds: f64,
    /// Single-token checks of an unfiltered draw.
    pub checks: u64,
    /// Seconds spent in those checks.
    pub check_seconds: f64,
    /// Checks that allowed the token, so no mask was needed.
    pub skipped: u64,
}

impl GrammarStats {
    fn add_mask(&self, nanos: u64) {
        self.masks.fetch_add(1, Ordering::Relaxed);
        self.mask_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_mask_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    fn add_check(&self, nanos: u64, allowed: bool) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.check_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.skipped.fetch_add(allowed as u64, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> GrammarCounts {
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 * 1e-9;
        GrammarCounts {
            masks: self.masks.load(Ordering::Relaxed),
            mask_seconds: s(&self.mask_nanos),
            max_mask_seconds: s(&self.max_mask_nanos),
            checks: self.checks.load(Ordering::Relaxed),
            check_seconds: s(&self.check_nanos),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("grammar", &self.grammar).finish()
    }
}

/// Two constraints are equal when their grammars are.
impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.grammar == other.grammar
    }
}

impl Constraint {
    /// The grammar it was compiled from.
    pub fn grammar(&self) -> &Grammar {
        &self.grammar
    }

    /// The same grammar with its own counters, always building the full
    /// mask (no check of an unfiltered draw first): to measure the mask, or
    /// to show the shortcut changes nothing.
    pub fn with_full_masks(&self) -> Self {
        Self { full_masks: true, stats: Arc::new(GrammarStats::default()), ..self.clone() }
    }

    /// The same grammar counting into `stats` (a server's totals) instead
    /// of counters of its own.
    pub fn counting_into(&self, stats: Arc<GrammarStats>) -> Self {
        Self { stats, ..self.clone() }
    }

    /// Mask and check counts and times over every sequence it constrained.
    pub fn counts(&self) -> GrammarCounts {
        self.stats.counts()
    }

    /// A fresh processor for one sequence (at the grammar's start) whose
    /// generation ends at `stop_ids`.
    pub fn processor(&self, stop_ids: &[u32]) -> GrammarProcessor {
        let m = self.pristine.lock().unwrap_or_else(|e| e.into_inner()).deep_clone();
        let mut ids = self.stop_ids.clone();
        ids.extend(stop_ids.iter().filter(|s| !self.stop_ids.contains(s)));
        GrammarProcessor { matcher: m, stop_ids: ids, saved: Vec::new(), stats: self.stats.clone(), full_masks: self.full_masks }
    }
}

/// The logits processor of one constrained sequence.
pub struct GrammarProcessor {
    matcher: Matcher,
    stop_ids: Vec<u32>,
    /// The stop ids' logits before masking (reused).
    saved: Vec<f32>,
    stats: Arc<GrammarStats>,
    full_masks: bool,
}

impl std::fmt::Debug for GrammarProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarProcessor").finish()
    }
}

impl GrammarProcessor {
    /// The allowed next tokens (the stop ids when the grammar may end).
    fn mask(&mut self) -> Result<(SimpleVob, bool)> {
        let t = Instant::now();
        let mask = self.matcher.compute_mask_or_eos().map_err(|e| GemmaError::invalid("grammar", e.to_string()))?;
        let eos = self.eos()?;
        let can_end = mask.is_allowed(eos);
        self.stats.add_mask(t.elapsed().as_nanos() as u64);
        Ok((mask, can_end))
    }

    fn eos(&self) -> Result<u32> {
        self.matcher.tok_env().map(|e| e.tok_trie().eos_token()).map_err(|e| GemmaError::invalid("grammar", e.to_string()))
    }

    /// Whether `id` may come next, exactly as the mask would say: a stop
    /// id (or EOS) when the grammar may end here, any other id when the
    /// parser takes it.
    fn allowed(&mut self, id: u32) -> Result<bool> {
        let bad = |e: String| GemmaError::invalid("grammar", e);
        if id == self.eos()? || self.stop_ids.contains(&id) {
            return Ok(self.matcher.is_stopped() || self.matcher.is_accepting().map_err(|e| bad(e.to_string()))?);
        }
        if self.matcher.is_stopped() {
            return Ok(false);
        }
        Ok(self.matcher.validate_tokens(&[id]).map_err(|e| bad(e.to_string()))? == 1)
    }

    /// Whether `id` may come next (what the mask would say), for tests.
    pub fn allows_now(&mut self, id: u32) -> Result<bool> {
        self.allowed(id)
    }

    /// The ids the full mask allows now, for tests.
    pub fn allowed_ids(&mut self, vocab: usize) -> Result<Vec<u32>> {
        let mut l = vec![0.0f32; vocab];
        self.apply(&mut l)?;
        Ok((0..vocab as u32).filter(|&i| l[i as usize] == 0.0).collect())
    }

    /// Whether the output so far is a complete match.
    pub fn is_complete(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }
}

impl LogitsProcessor for GrammarProcessor {
    fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        let (mask, can_end) = self.mask()?;
        // The mask's end bit is EOS alone; every stop id ends the sequence.
        self.saved.clear();
        self.saved.extend(self.stop_ids.iter().map(|&s| logits.get(s as usize).copied().unwrap_or(f32::NEG_INFINITY)));
        // 32 ids per mask word: all-allowed and all-forbidden words (most
        // of them) cost one test.
        let n = mask.len().min(logits.len());
        for (chunk, &bits) in logits[..n].chunks_mut(32).zip(mask.as_slice()) {
            match bits {
                u32::MAX => {}
                0 => chunk.fill(f32::NEG_INFINITY),
                _ => chunk.iter_mut().enumerate().filter(|(b, _)| bits & (1 << b) == 0).for_each(|(_, l)| *l = f32::NEG_INFINITY),
            }
        }
        logits[n..].fill(f32::NEG_INFINITY);
        for (&s, &v) in self.stop_ids.iter().zip(&self.saved) {
            if let Some(l) = logits.get_mut(s as usize) {
                *l = if can_end { v } else { f32::NEG_INFINITY };
            }
        }
        Ok(())
    }

    fn allows(&mut self, id: u32) -> Result<Option<bool>> {
        if self.full_masks {
            return Ok(None);
        }
        let t = Instant::now();
        let ok = self.allowed(id)?;
        self.stats.add_check(t.elapsed().as_nanos() as u64, ok);
        Ok(Some(ok))
    }

    fn accept(&mut self, id: u32) -> Result<()> {
        self.matcher.consume_token(id).map_err(|e| GemmaError::invalid("grammar", format!("token {id} does not fit the grammar: {e}")))
    }
}
