//! LoRA / QLoRA fine-tuning of Gemma on CPU. The forward is the model's own
//! ([`gemma_model::Model::forward_train`], recording a tape); this crate
//! holds the backward of every step, the fused chunked cross-entropy,
//! AdamW with transformers' schedules, the data formats and loss masks, and
//! PEFT adapter files.

pub mod ops;
pub mod real;
pub mod adapter;
pub mod backward;
pub mod data;
pub mod export;
pub mod optim;
pub mod svg;
pub mod trainer;

pub use adapter::{LoraSpec, TrainableLora};

/// Errors of fine-tuning, naming the file, line or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// From the model, formats or tokenizer.
    #[error(transparent)]
    Model(#[from] gemma_core::GemmaError),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Bad data, settings or state.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
