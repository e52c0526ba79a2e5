//! Text generation: seeded samplers, stop rules, incremental UTF-8
//! detokenizing, and the prefill/decode loop over a [`Session`].

pub mod detokenize;
pub mod generate;
pub mod generation_config;
pub mod perplexity;
pub mod rng;
pub mod sampling;
pub mod stop;

pub use detokenize::TokenStreamDecoder;
pub use generate::{generate, FinishReason, GenerateRequest, Generation, Session};
pub use generation_config::GenerationConfig;
pub use perplexity::{perplexity, windows_exact, windows_with_bos, Perplexity};
pub use rng::Rng;
pub use sampling::{Sampler, SamplingParams};
pub use stop::StopStrings;
