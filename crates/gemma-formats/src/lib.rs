//! Checkpoint formats. Knows nothing of Gemma: it maps files and hands out
//! named, typed tensors.

pub mod safetensors_set;

pub use safetensors_set::{SafetensorsSet, TensorInfo};
