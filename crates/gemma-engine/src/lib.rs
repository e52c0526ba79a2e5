//! The serving engine: a request queue and a continuous-batching scheduler
//! over one loaded model, on its own thread. No HTTP here.
//!
//! Every step the scheduler admits waiting requests into free slots (each
//! with its own KV cache and sampler), gives every prefilling sequence its
//! next prompt chunk and every decoding sequence one token, runs them all in
//! one `Model::forward_batch`, samples, streams each new token to its
//! requester and retires finished or cancelled sequences at once. Decode
//! steps are batch-invariant, so a request's greedy output is the same alone
//! or among others.

mod embed_queue;
pub mod eval;
mod prefix_cache;
mod scheduler;

pub use gemma_generate::{FinishReason, GenerateRequest as Request, PromptLogprob, TokenLogprob};

use gemma::vision::{ImagePlace, PreparedImage};
use gemma::{Embedding, Gemma};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tmpsc;

/// Limits and shape of the scheduler.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded together (KV cache slots).
    pub max_batch: usize,
    /// Requests waiting for a slot before new ones are refused (overloaded).
    pub max_queue: usize,
    /// Prompt tokens a prefilling sequence advances per step, so a long
    /// prompt never stalls the others for long (1 to [`gemma_model::MAX_CHUNK`]).
    pub prefill_chunk: usize,
    /// Longest prompt accepted, in tokens.
    pub max_input_tokens: usize,
    /// Longest prompt + generation accepted, in tokens.
    pub max_total_tokens: usize,
    /// Bytes of finished prefills kept for prefix reuse (0: off); see
    /// `prefix_cache.rs`.
    pub prefix_cache_bytes: usize,
    /// Most images one request may hold.
    pub max_images: usize,
}

/// Default of [`EngineConfig::max_images`].
pub const DEFAULT_MAX_IMAGES: usize = 8;

/// Default of [`EngineConfig::prefix_cache_bytes`]: 256 MiB.
pub const DEFAULT_PREFIX_CACHE_BYTES: usize = 256 << 20;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_queue: 64,
            prefill_chunk: 128,
            max_input_tokens: 4096,
            max_total_tokens: 8192,
            prefix_cache_bytes: DEFAULT_PREFIX_CACHE_BYTES,
            max_images: DEFAULT_MAX_IMAGES,
        }
    }
}

impl EngineConfig {
    /// Refuse shapes the scheduler cannot honor.
    pub fn validate(&self) -> Result<(), gemma_core::GemmaError> {
        let max = gemma_model::MAX_CHUNK;
        if !(1..=max).contains(&self.prefill_chunk) {
            return Err(gemma_core::GemmaError::invalid(
                "prefill_chunk",
                format!("must be between 1 and {max} tokens (one forward step's limit), got {}", self.prefill_chunk),
            ));
        }
        if self.max_batch == 0 {
            return Err(gemma_core::GemmaError::invalid("max_batch", "must be at least 1"));
        }
        Ok(())
    }
}

/// A generated token as streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    /// Token id.
    pub id: u32,
    /// Text that became final with this token (may be empty while a UTF-8
    /// character or a possible stop string is incomplete).
    pub text: String,
    /// Whether the token is a control token.
    pub special: bool,
    /// Its log-probability under the model (when asked).
    pub logprob: Option<f32>,
    /// The most likely alternatives (when asked).
    pub top: Vec<TokenLogprob>,
}

/// How a request ended, with its timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Why generation stopped.
    pub finish: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (stop tokens excluded).
    pub generated_tokens: usize,
    /// Leading prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    /// Time spent waiting for a slot.
    pub queue_time: Duration,
    /// Time from admission to the first generated token.
    pub time_to_first_token: Duration,
    /// Time from admission to the end.
    pub inference_time: Duration,
    /// Remaining text held back by the decoder, emitted at the end.
    pub tail_text: String,
    /// Draft tokens verified (speculative decoding; 0 without).
    pub drafted_tokens: usize,
    /// Draft tokens the model chose too.
    pub accepted_tokens: usize,
}

/// What a requester receives, in order: the prompt's scores (when asked
/// for), tokens, then one `Done` (or `Error`).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Scores of the prompt tokens from `prompt_logprobs_from` on, once the
    /// prefill is done.
    Prompt(Vec<PromptLogprob>),
    /// A new token.
    Token(TokenEvent),
    /// The request finished.
    Done(Summary),
    /// The request failed.
    Error(String),
}

/// Why a request was refused before any work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    /// Invalid request (too long, bad parameters, …); the message says what.
    #[error("{0}")]
    Invalid(String),
    /// Queue full.
    #[error("the server is overloaded: {queued} requests already waiting")]
    Overloaded {
        /// Requests waiting.
        queued: usize,
    },
    /// The engine is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A submitted request: its event stream. Dropping it cancels the request
/// (its slot is freed at the next step).
#[derive(Debug)]
pub struct Handle {
    /// Engine-wide request number.
    pub id: u64,
    /// Events of this request.
    pub events: tmpsc::UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// A request inside the engine.
pub(crate) struct Job {
    pub req: Request,
    /// Images of the prompt, encoded before the request is admitted (one
    /// tower layer per scheduler step), and where their runs go.
    pub images: Vec<PreparedImage>,
    pub places: Vec<ImagePlace>,
    pub tx: tmpsc::UnboundedSender<Event>,
    pub cancel: Arc<AtomicBool>,
    pub queued_at: Instant,
}

/// An embedding request inside the engine.
pub(crate) struct EmbedJob {
    /// Token ids of each text (from `Gemma::embed_inputs`).
    pub inputs: Vec<Vec<u32>>,
    /// Matryoshka truncation.
    pub dimensions: Option<usize>,
    pub tx: tokio::sync::oneshot::Sender<Result<Vec<Embedding>, String>>,
    pub cancel: Arc<AtomicBool>,
}

/// What the scheduler thread receives.
#[allow(clippy::large_enum_variant)] // one message per request; boxing buys nothing
pub(crate) enum Work {
    Generate(Job),
    Embed(EmbedJob),
}

/// A submitted embedding request. Dropping it cancels the request.
#[derive(Debug)]
pub struct EmbedHandle {
    rx: tokio::sync::oneshot::Receiver<Result<Vec<Embedding>, String>>,
    cancel: Arc<AtomicBool>,
}

impl EmbedHandle {
    /// The embeddings, in input order, or what went wrong.
    pub async fn wait(mut self) -> Result<Vec<Embedding>, String> {
        (&mut self.rx).await.unwrap_or_else(|_| Err("the engine stopped".into()))
    }
}

impl Drop for EmbedHandle {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Live counters shared with the server (for /metrics and /info).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Sequences in the running batch.
    pub running: AtomicUsize,
    /// Steps run so far.
    pub steps: AtomicU64,
    /// Prompt tokens taken from the prefix cache instead of computed.
    pub cached_tokens: AtomicU64,
    /// Bytes the prefix cache holds.
    pub prefix_cache_bytes: AtomicUsize,
    /// Tokens held in the running sequences' KV caches.
    pub kv_tokens: AtomicUsize,
    /// Tokens the KV cache slots can hold together (`max_batch` × `max_total_tokens`).
    pub kv_capacity: AtomicUsize,
    /// Images (and pan-and-scan crops) the tower encoded.
    pub images_encoded: AtomicU64,
    /// Microseconds spent encoding them.
    pub image_encode_micros: AtomicU64,
    /// Draft tokens verified (speculative decoding).
    pub drafted_tokens: AtomicU64,
    /// Draft tokens accepted.
    pub accepted_tokens: AtomicU64,
}

impl EngineStats {
    /// The share of the KV cache capacity in use, 0 to 1 (vLLM's `kv_cache_usage_perc`).
    pub fn kv_usage(&self) -> f64 {
        let cap = self.kv_capacity.load(Ordering::Relaxed);
        if cap == 0 {
            return 0.0;
        }
        (self.kv_tokens.load(Ordering::Relaxed) as f64 / cap as f64).min(1.0)
    }
}

/// The engine: submit requests, read their events.
pub struct Engine {
    tx: Option<mpsc::Sender<Work>>,
    stats: Arc<EngineStats>,
    stopping: Arc<AtomicBool>,
    draining: AtomicBool,
    next_id: AtomicU64,
    config: EngineConfig,
    context: usize,
    gemma: Arc<Gemma>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Engine {
    /// Start the scheduler thread for `gemma` (the config is validated first).
    pub fn start(gemma: Arc<Gemma>, config: EngineConfig) -> Result<Self, gemma_core::GemmaError> {
        config.validate()?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        stats.kv_capacity.store(config.max_batch * config.max_total_tokens, Ordering::SeqCst);
        let stopping = Arc::new(AtomicBool::new(false));
        let context = gemma.model.config.max_position_embeddings;
        let thread = {
            let (gemma, stats, config) = (Arc::clone(&gemma), Arc::clone(&stats), config.clone());
            std::thread::Builder::new()
                .name("gemma-scheduler".into())
                .spawn(move || scheduler::run(&gemma, &config, rx, &stats))
                .expect("spawning the scheduler thread")
        };
        Ok(Self { tx: Some(tx), stats, stopping, draining: AtomicBool::new(false), next_id: AtomicU64::new(1), config, context, gemma, thread: Some(thread) })
    }

    /// The model served.
    pub fn gemma(&self) -> &Arc<Gemma> {
        &self.gemma
    }

    /// The limits in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Live counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Check a request against the limits without submitting it.
    pub fn validate(&self, req: &Request) -> Result<(), SubmitError> {
        let c = &self.config;
        if self.gemma.model.config.bidirectional {
            return Err(SubmitError::Invalid("this is an embedding model (bidirectional attention): it does not generate; use /v1/embeddings".into()));
        }
        req.validate(self.gemma.model.config.vocab_size, self.context).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let hidden = self.gemma.model.config.hidden_size;
        let runs: Vec<(usize, usize)> = req.media.iter().map(|m| (m.at, m.len(hidden))).collect();
        if let Some(m) = req.media.iter().find(|m| m.rows.is_empty() || m.rows.len() % hidden != 0) {
            return Err(SubmitError::Invalid(format!("a media run of {} values is not whole rows of the model's width {hidden}", m.rows.len())));
        }
        check_runs(runs, req.prompt.len(), self.gemma.model.config.step_limit())?;
        let n = req.prompt.len();
        if n > c.max_input_tokens {
            return Err(SubmitError::Invalid(format!("the prompt has {n} tokens, more than max_input_tokens = {}", c.max_input_tokens)));
        }
        let total = c.max_total_tokens.min(self.context);
        if n + req.max_new_tokens > total {
            return Err(SubmitError::Invalid(format!(
                "prompt ({n} tokens) + max_new_tokens ({}) must be <= {total} (max_total_tokens)",
                req.max_new_tokens
            )));
        }
        Ok(())
    }

    /// Queue a request; its events arrive on the returned handle.
    pub fn submit(&self, req: Request) -> Result<Handle, SubmitError> {
        self.submit_images(req, Vec::new(), Vec::new())
    }

    /// Queue a request whose prompt holds `images` (from
    /// `Gemma::prepare_image`), their runs at `places` (from
    /// `Gemma::image_prompt`). The scheduler encodes them between the steps
    /// of the running sequences, one tower layer at a time, then admits the
    /// request with the soft tokens in its media.
    pub fn submit_images(&self, req: Request, images: Vec<PreparedImage>, places: Vec<ImagePlace>) -> Result<Handle, SubmitError> {
        self.validate(&req)?;
        if !images.is_empty() {
            let limit = self.config.max_images;
            if images.len() > limit {
                return Err(SubmitError::Invalid(format!("the request has {} images, more than the {limit} one request may hold (--max-images)", images.len())));
            }
            if !req.media.is_empty() {
                return Err(SubmitError::Invalid("a request takes images to encode or encoded media, not both".into()));
            }
            if let Some(p) = places.iter().find(|p| images.get(p.image).is_none_or(|im| p.view >= im.views())) {
                return Err(SubmitError::Invalid(format!("a soft-token run at {} names view {} of image {}, which the request does not hold", p.at, p.view, p.image)));
            }
            if places.len() != images.iter().map(PreparedImage::views).sum::<usize>() {
                return Err(SubmitError::Invalid(format!("{} soft-token runs for {} images and crops", places.len(), images.iter().map(PreparedImage::views).sum::<usize>())));
            }
            check_runs(places.iter().map(|p| (p.at, p.tokens)).collect(), req.prompt.len(), self.gemma.model.config.step_limit())?;
        }
        if self.stopping.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let queued = self.stats.queued.load(Ordering::SeqCst);
        if queued >= self.config.max_queue {
            return Err(SubmitError::Overloaded { queued });
        }
        let (tx, events) = tmpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job { req, images, places, tx, cancel: Arc::clone(&cancel), queued_at: Instant::now() };
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        self.send(Work::Generate(job))?;
        Ok(Handle { id: self.next_id.fetch_add(1, Ordering::SeqCst), events, cancel })
    }

    /// Queue texts to embed (token ids from `Gemma::embed_inputs`). The
    /// scheduler runs waiting texts of all requests together, in batches of
    /// up to `gemma::EMBED_BATCH_TOKENS` tokens, between generation steps.
    pub fn embed(&self, inputs: Vec<Vec<u32>>, dimensions: Option<usize>) -> Result<EmbedHandle, SubmitError> {
        if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
            return Err(SubmitError::Invalid("nothing to embed: every input needs at least one token".into()));
        }
        // Checked here, so a bad input never fails the other requests of its pass.
        let vocab = self.gemma.model.config.vocab_size;
        if let Some(&id) = inputs.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(SubmitError::Invalid(format!("token id {id} is outside the vocabulary of {vocab}")));
        }
        if let Some(long) = inputs.iter().find(|i| i.len() > self.context) {
            return Err(SubmitError::Invalid(format!("an input has {} tokens, more than the model's context of {}", long.len(), self.context)));
        }
        if self.stopping.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let queued = self.stats.queued.load(Ordering::SeqCst);
        if queued >= self.config.max_queue {
            return Err(SubmitError::Overloaded { queued });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        self.send(Work::Embed(EmbedJob { inputs, dimensions, tx, cancel: Arc::clone(&cancel) }))?;
        Ok(EmbedHandle { rx, cancel })
    }

    fn send(&self, work: Work) -> Result<(), SubmitError> {
        let sent = self.tx.as_ref().map(|t| t.send(work).is_ok()).unwrap_or(false);
        if !sent {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::ShuttingDown);
        }
        Ok(())
    }

    /// Stop accepting requests; running and queued ones continue.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether [`Engine::begin_shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Announce a coming shutdown (health checks fail) while requests are
    /// still accepted, so load balancers stop sending new ones first.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether a drain or a shutdown has begun (what health checks report).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst) || self.is_stopping()
    }
}

/// Media runs `(at, len)` must lie inside the prompt, apart, each within
/// one step (`max` positions).
fn check_runs(mut runs: Vec<(usize, usize)>, prompt: usize, max: usize) -> Result<(), SubmitError> {
    runs.sort_unstable();
    if let Some(&(at, len)) = runs.iter().find(|&&(at, len)| len == 0 || len > max || at + len > prompt) {
        return Err(SubmitError::Invalid(format!("a media run at {at}..{} must be 1 to {max} positions inside the prompt of {prompt} tokens", at + len)));
    }
    if let Some(w) = runs.windows(2).find(|w| w[1].0 < w[0].0 + w[0].1) {
        return Err(SubmitError::Invalid(format!("media runs at {} and {} overlap", w[0].0, w[1].0)));
    }
    Ok(())
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        drop(self.tx.take()); // the scheduler exits when its queue is closed and empty
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
