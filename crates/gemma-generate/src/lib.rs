//! Text generation: one [`SequenceState`] per sequence (logits processors,
//! seeded sampler, stop rules, incremental UTF-8 detokenizing, logprobs,
//! limits, grammar constraints), driven by the library's prefill/decode loop over a [`Session`]
//! and by the serving engine alike.

pub mod decoding;
pub mod detokenize;
pub mod generate;
pub mod generation_config;
pub mod grammar;
pub mod logprobs;
pub mod perplexity;
pub mod processors;
pub mod rng;
pub mod sampling;
pub mod sequence;
pub mod speculative;
pub mod stop;

pub use decoding::Decoding;
pub use detokenize::TokenStreamDecoder;
pub use generate::{generate, Generation, Session};
pub use logprobs::{log_sum_exp, logprobs, prompt_logprob, top_logprobs, PromptLogprob, TokenLogprob};
pub use processors::{LogitsProcessor, PresenceFrequencyPenalty, RepetitionPenalty};
pub use speculative::{SpecMode, SpecStats, Speculation};
pub use sequence::{Adapter, FinishReason, GenerateRequest, MediaInput, SequenceState, Step, MAX_TOP_LOGPROBS};
pub use generation_config::GenerationConfig;
pub use grammar::{json_without_whitespace, Constraint, Grammar, GrammarCompiler, GrammarCounts, GrammarProcessor, GrammarStats};
pub use perplexity::{perplexity, windows_exact, windows_with_bos, Perplexity};
pub use rng::Rng;
pub use sampling::{Sampler, SamplingParams};
pub use stop::StopStrings;
