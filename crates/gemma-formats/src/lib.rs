//! Checkpoint formats. Knows nothing of Gemma: it maps files and hands out
//! named, typed tensors and metadata.

pub mod flax_msgpack;
pub mod folio_writer;
pub mod fuzz;
pub mod gguf;
pub mod gguf_write;
pub mod image_file;
pub mod safetensors_set;

pub use flax_msgpack::FlaxCheckpoint;
pub use folio_writer::FolioWriter;
pub use gguf::{file_type_name, file_type_value, is_gguf, GgufFile, GgufHeader, GgufTensorInfo, GgufValue};
pub use gguf_write::{GgufWriter, TensorFill};
pub use safetensors_set::{SafetensorsSet, TensorInfo};
