//! Gemma's tokenizer loaded from a Hugging Face folder (`tokenizer.json` and
//! `tokenizer_config.json`). BOS is handled here, not by the tokenizer's
//! post-processor, so it is added exactly once.

use crate::chat::{ChatMessage, ChatTemplate};
use gemma_core::{GemmaError, Result};
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

/// A Gemma tokenizer with its special tokens and chat template.
pub struct GemmaTokenizer {
    inner: Tokenizer,
    /// Id of `<bos>`.
    pub bos_id: u32,
    /// The BOS token text (`<bos>`).
    pub bos_token: String,
    /// The EOS token text (`<eos>`).
    pub eos_token: String,
    /// Ids that end generation: `<eos>`, `<end_of_turn>` where present.
    pub stop_ids: Vec<u32>,
    /// Whether prompts start with BOS (`add_bos_token`, default true).
    pub add_bos: bool,
    /// The chat template (the model's own, or the built-in Gemma one).
    pub chat_template: ChatTemplate,
}

impl std::fmt::Debug for GemmaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmaTokenizer").field("vocab_size", &self.vocab_size()).field("bos_id", &self.bos_id).finish()
    }
}

/// A token name in tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl GemmaTokenizer {
    /// Load `tokenizer.json` (required) and `tokenizer_config.json`
    /// (optional) from a model folder.
    pub fn from_folder(folder: &Path) -> Result<Self> {
        let tok_path = folder.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(GemmaError::io(&tok_path, std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found")));
        }
        let inner = Tokenizer::from_file(&tok_path).map_err(|e| GemmaError::format(&tok_path, e.to_string()))?;
        let cfg_path = folder.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| GemmaError::io(&cfg_path, e))?;
            serde_json::from_str(&text).map_err(|e| GemmaError::format(&cfg_path, e.to_string()))?
        } else {
            Value::Object(Default::default())
        };
        let template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // Older format: a list of {"name", "template"}; use "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        let template = match template {
            Some(src) => Some(src),
            None => {
                let jinja = folder.join("chat_template.jinja");
                if jinja.is_file() {
                    Some(std::fs::read_to_string(&jinja).map_err(|e| GemmaError::io(&jinja, e))?)
                } else {
                    None
                }
            }
        };
        let chat_template = match template {
            Some(src) => ChatTemplate::new(&src).map_err(|e| GemmaError::format(&cfg_path, e.to_string()))?,
            None => ChatTemplate::gemma(),
        };
        let add_bos = cfg.get("add_bos_token").and_then(Value::as_bool).unwrap_or(true);
        Self::from_parts(inner, token_text(cfg.get("bos_token")), token_text(cfg.get("eos_token")), add_bos, chat_template)
    }

    /// Build from an already loaded `tokenizers::Tokenizer`.
    pub fn from_parts(inner: Tokenizer, bos: Option<String>, eos: Option<String>, add_bos: bool, chat_template: ChatTemplate) -> Result<Self> {
        let bos_token = bos.unwrap_or_else(|| "<bos>".to_string());
        let eos_token = eos.unwrap_or_else(|| "<eos>".to_string());
        let bos_id = inner
            .token_to_id(&bos_token)
            .ok_or_else(|| GemmaError::Tokenizer(format!("BOS token `{bos_token}` is not in the vocabulary")))?;
        let mut stop_ids = Vec::new();
        for t in [eos_token.as_str(), "<end_of_turn>"] {
            if let Some(id) = inner.token_to_id(t) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        Ok(Self { inner, bos_id, bos_token, eos_token, stop_ids, add_bos, chat_template })
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encode text. Control tokens written in the text (`<start_of_turn>`)
    /// become their ids. BOS is prepended when `add_bos` is set and the text
    /// does not already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| GemmaError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && enc.get_ids().first() != Some(&self.bos_id) {
            ids.push(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Encode a prompt as the model expects: BOS first when `add_bos_token`.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, self.add_bos)
    }

    /// Decode ids to text; `skip_special` drops control tokens such as `<bos>`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let n = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= n) {
            return Err(GemmaError::InvalidToken { id: bad, vocab_size: n });
        }
        self.inner.decode(ids, skip_special).map_err(|e| GemmaError::Tokenizer(e.to_string()))
    }

    /// Decode generated ids to user-visible text: control tokens (`<bos>`,
    /// `<end_of_turn>`, …) are dropped, byte-fallback tokens are kept even
    /// where a tokenizer.json marks them special.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        let visible: Vec<u32> = ids.iter().copied().filter(|&id| !self.is_control(id)).collect();
        self.decode(&visible, false)
    }

    /// True for special tokens other than byte-fallback ones (`<0x41>`).
    pub fn is_control(&self, id: u32) -> bool {
        match self.inner.get_added_tokens_decoder().get(&id) {
            Some(t) if t.special => !(t.content.len() == 6 && t.content.starts_with("<0x") && t.content.ends_with('>')),
            _ => false,
        }
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// True for control tokens (`<bos>`, `<end_of_turn>`, …).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.get_added_tokens_decoder().get(&id).map(|t| t.special).unwrap_or(false)
    }

    /// Render a conversation with the chat template (BOS included by the
    /// template) and append the model-turn opening when asked.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.chat_template.render(messages, add_generation_prompt, &self.bos_token, &self.eos_token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
