//! The seeded PRNG lives in gemma-core (shared with training).

pub use gemma_core::rng::Rng;
