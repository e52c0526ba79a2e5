//! Gemma's tokenizer and chat template.

pub mod chat;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, GEMMA_CHAT_TEMPLATE};
pub use tokenizer::GemmaTokenizer;
