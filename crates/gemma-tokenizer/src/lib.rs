//! Gemma's tokenizer and chat template.

pub mod chat;
pub mod spm;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, GEMMA_CHAT_TEMPLATE};
pub use spm::{SpmTokenizer, TokenKind};
pub use tokenizer::{Backend, GemmaTokenizer};
