//! Core types shared by every gemma-rs crate: element types, weight storage
//! and the common error type. Knows nothing of models.

pub mod error;
pub mod rng;
pub mod tensor;

pub use error::{GemmaError, Result};
pub use tensor::{Bytes, DType, Matrix, Storage};
