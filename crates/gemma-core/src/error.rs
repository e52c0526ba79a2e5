//! The one error type of the gemma-rs libraries.

use std::path::PathBuf;

/// Result alias used across the gemma-rs libraries.
pub type Result<T, E = GemmaError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or running a model.
/// Each variant names the file, tensor or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum GemmaError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its contents are malformed (truncated, bad JSON, bad header).
    #[error("malformed file {path}: {message}")]
    Format {
        /// The malformed file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration field is missing, has the wrong type or an unsupported value.
    #[error("config field `{field}`: {message}")]
    Config {
        /// Name of the field (dotted path for nested ones).
        field: String,
        /// What was expected.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// Checkpoint name of the tensor.
        name: String,
    },
    /// A tensor has a shape other than the config implies.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Checkpoint name of the tensor.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in an element type this build cannot use.
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDType {
        /// Checkpoint name of the tensor.
        name: String,
        /// The dtype as the file names it.
        dtype: String,
    },
    /// The checkpoint is of a model family this engine does not run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// Tokenizer loading or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    InvalidToken {
        /// The offending id.
        id: u32,
        /// Size of the vocabulary.
        vocab_size: usize,
    },
    /// A caller-supplied argument is out of range.
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument {
        /// Name of the argument.
        name: String,
        /// What is allowed.
        message: String,
    },
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
}

impl GemmaError {
    /// Shorthand for [`GemmaError::Config`].
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { field: field.into(), message: message.into() }
    }

    /// Shorthand for [`GemmaError::Format`].
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format { path: path.into(), message: message.into() }
    }

    /// Shorthand for [`GemmaError::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument { name: name.into(), message: message.into() }
    }

    /// Shorthand for [`GemmaError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
