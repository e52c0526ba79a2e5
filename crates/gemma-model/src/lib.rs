//! The Gemma model: a typed config parsed once from the checkpoint, weights,
//! a KV cache, and one config-driven forward for every Gemma generation.

pub mod assistant;
pub mod attention;
pub mod batch;
pub mod cache;
pub mod config;
pub mod flax;
pub mod forward;
pub mod gguf;
pub mod gguf_keys;
pub mod hf;
pub mod lora;
pub mod tape;
pub mod tensors;
pub mod towers;
mod visit;
pub mod variants;
pub mod weights;
pub mod workspace;

pub use assistant::Assistant;
pub use batch::{BatchItem, BatchOut, BatchWorkspace};
pub use cache::{KvCache, KvType};
pub use config::{Activation, AttentionKind, Family, GemmaConfig, LayerSpec};
pub use forward::{chunk_end, LogitsMode, Media, Model, Numerics, MAX_CHUNK};
pub use lora::LoraAdapter;
pub use tape::{LayerTape, Tape};
pub use tensors::{Part, Proj, TensorSpec, TENSORS};
pub use weights::{LayerWeights, Weights};
pub use workspace::Workspace;
