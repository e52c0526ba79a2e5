//! gemma-rs errors as Python exceptions of the matching class.

use gemma::GemmaError;
use pyo3::exceptions::{PyFileNotFoundError, PyIOError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

/// The exception for a library error: a missing file is `FileNotFoundError`,
/// other I/O `OSError`, bad input (requests, configs, files, tokens)
/// `ValueError` (the message names the field), the rest `RuntimeError`.
pub fn to_py(e: GemmaError) -> PyErr {
    let msg = e.to_string();
    match &e {
        GemmaError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
        GemmaError::Io { .. } => PyIOError::new_err(msg),
        GemmaError::Unsupported(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// An engine refusal as `ValueError` (invalid) or `RuntimeError` (busy, stopping).
pub fn submit(e: gemma_engine::SubmitError) -> PyErr {
    match e {
        gemma_engine::SubmitError::Invalid(m) => PyValueError::new_err(m),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}
