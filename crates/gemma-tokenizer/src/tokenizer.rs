//! Gemma's tokenizer loaded from a Hugging Face folder (`tokenizer.json` and
//! `tokenizer_config.json`). BOS is handled here, not by the tokenizer's
//! post-processor, so it is added exactly once.

use crate::chat::{ChatMessage, ChatTemplate};
use crate::spm::{SpmTokenizer, TokenKind};
use gemma_core::{GemmaError, Result};
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

/// The tokenizer implementation behind a [`GemmaTokenizer`].
#[derive(Debug)]
pub enum Backend {
    /// Hugging Face `tokenizer.json` through the `tokenizers` crate.
    HuggingFace(Box<Tokenizer>),
    /// SentencePiece vocabulary with scores from GGUF metadata.
    Spm(Box<SpmTokenizer>),
}

/// A Gemma tokenizer with its special tokens and chat template.
pub struct GemmaTokenizer {
    inner: Backend,
    /// Id of `<bos>`.
    pub bos_id: u32,
    /// The BOS token text (`<bos>`).
    pub bos_token: String,
    /// The EOS token text (`<eos>`).
    pub eos_token: String,
    /// Ids that end generation: `<eos>`, `<end_of_turn>` / `<turn|>`, and the
    /// tool-response openers where present.
    pub stop_ids: Vec<u32>,
    /// Whether prompts start with BOS (`add_bos_token`, default true).
    pub add_bos: bool,
    /// Whether embedding inputs end with EOS (`add_eos_token`, default false).
    pub add_eos: bool,
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

impl Backend {
    /// Gemma 4's tokenizer from a GGUF vocabulary: BPE over the pieces with
    /// `▁` for spaces and `<0xXX>` byte fallback, as its `tokenizer.json`
    /// (control tokens, and user-defined ones spelled `<…>` such as
    /// `<|channel>`, are special added tokens; other user-defined pieces such
    /// as runs of newlines are added tokens that decode as text).
    pub fn bpe_from_pieces(tokens: &[String], kinds: &[TokenKind], merges: &[String]) -> std::result::Result<Self, String> {
        let vocab: serde_json::Map<String, serde_json::Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::json!(i))).collect();
        let added: Vec<serde_json::Value> = tokens
            .iter()
            .zip(kinds)
            .enumerate()
            .filter(|(_, (_, k))| matches!(k, TokenKind::Control | TokenKind::UserDefined))
            .map(|(i, (t, k))| {
                let special = *k == TokenKind::Control || (t.starts_with('<') && t.ends_with('>'));
                serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special})
            })
            .collect();
        let unk = tokens.iter().position(|t| t == "<unk>").map(|i| tokens[i].clone());
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
            "pre_tokenizer": null, "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": true, "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        json.to_string().parse::<Tokenizer>().map(|t| Backend::HuggingFace(Box::new(t))).map_err(|e| e.to_string())
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
        let mut t = Self::from_parts(
            Backend::HuggingFace(Box::new(inner)),
            token_text(cfg.get("bos_token")),
            token_text(cfg.get("eos_token")),
            add_bos,
            chat_template,
        )?;
        t.add_eos = cfg.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false);
        Ok(t)
    }

    /// Build from a backend and the special-token settings.
    pub fn from_parts(inner: Backend, bos: Option<String>, eos: Option<String>, add_bos: bool, chat_template: ChatTemplate) -> Result<Self> {
        let mut t = Self { inner, bos_id: 0, bos_token: String::new(), eos_token: String::new(), stop_ids: Vec::new(), add_bos, add_eos: false, chat_template };
        t.bos_token = bos.unwrap_or_else(|| "<bos>".to_string());
        t.eos_token = eos.unwrap_or_else(|| "<eos>".to_string());
        t.bos_id =
            t.token_to_id(&t.bos_token).ok_or_else(|| GemmaError::Tokenizer(format!("BOS token `{}` is not in the vocabulary", t.bos_token)))?;
        // Gemma 1–3 end a turn with `<end_of_turn>`, Gemma 4 with `<turn|>`;
        // FunctionGemma and Gemma 4 stop before a tool's response (the
        // caller supplies it).
        let turn_ends = ["<end_of_turn>", "<turn|>", "<start_function_response>", "<|tool_response>"];
        for name in std::iter::once(t.eos_token.clone()).chain(turn_ends.iter().map(|s| s.to_string())) {
            if let Some(id) = t.token_to_id(&name) {
                if !t.stop_ids.contains(&id) {
                    t.stop_ids.push(id);
                }
            }
        }
        Ok(t)
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Backend::HuggingFace(t) => t.get_vocab_size(true),
            Backend::Spm(t) => t.len(),
        }
    }

    /// Encode text. Control tokens written in the text (`<start_of_turn>`)
    /// become their ids. BOS is prepended when `add_bos` is set and the text
    /// does not already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let body = match &self.inner {
            Backend::HuggingFace(t) => t.encode(text, false).map_err(|e| GemmaError::Tokenizer(e.to_string()))?.get_ids().to_vec(),
            Backend::Spm(t) => t.encode(text, true),
        };
        let mut ids = Vec::with_capacity(body.len() + 1);
        if add_bos && body.first() != Some(&self.bos_id) {
            ids.push(self.bos_id);
        }
        ids.extend_from_slice(&body);
        Ok(ids)
    }

    /// Encode with the special tokens the tokenizer itself adds
    /// (tokenizer.json's post-processor: EmbeddingGemma's adds BOS and EOS),
    /// as sentence-transformers tokenizes; BOS first when `add_bos_token`
    /// and the post-processor added none; EOS last when `add_eos_token`.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = match &self.inner {
            Backend::HuggingFace(t) => t.encode(text, true).map_err(|e| GemmaError::Tokenizer(e.to_string()))?.get_ids().to_vec(),
            Backend::Spm(t) => t.encode(text, true),
        };
        if self.add_bos && ids.first() != Some(&self.bos_id) {
            ids.insert(0, self.bos_id);
        }
        if self.add_eos {
            if let Some(eos) = self.token_to_id(&self.eos_token) {
                if ids.last() != Some(&eos) {
                    ids.push(eos);
                }
            }
        }
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
        match &self.inner {
            Backend::HuggingFace(t) => t.decode(ids, skip_special).map_err(|e| GemmaError::Tokenizer(e.to_string())),
            Backend::Spm(t) => Ok(t.decode(ids, !skip_special)),
        }
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
        match &self.inner {
            Backend::HuggingFace(t) => match t.get_added_tokens_decoder().get(&id) {
                Some(t) if t.special => !(t.content.len() == 6 && t.content.starts_with("<0x") && t.content.ends_with('>')),
                _ => false,
            },
            Backend::Spm(t) => matches!(t.kind(id), Some(TokenKind::Control | TokenKind::Unknown)),
        }
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Backend::HuggingFace(t) => t.token_to_id(token),
            Backend::Spm(t) => t.token_to_id(token),
        }
    }

    /// The string of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Backend::HuggingFace(t) => t.id_to_token(id),
            Backend::Spm(t) => t.id_to_token(id).map(str::to_string),
        }
    }

    /// Render a conversation with the chat template (BOS included by the
    /// template) and append the model-turn opening when asked.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.chat_template.render(messages, add_generation_prompt, &self.bos_token, &self.eos_token)
    }

    /// [`ChatTemplate::render_json`] with this tokenizer's BOS and EOS.
    pub fn apply_chat_template_json(&self, messages: &serde_json::Value, tools: Option<&serde_json::Value>, add_generation_prompt: bool) -> Result<String> {
        self.chat_template.render_json(messages, tools, add_generation_prompt, &self.bos_token, &self.eos_token)
    }

    /// [`ChatTemplate::render_json_kwargs`] with this tokenizer's BOS and EOS.
    pub fn apply_chat_template_kwargs(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        self.chat_template.render_json_kwargs(messages, tools, add_generation_prompt, &self.bos_token, &self.eos_token, kwargs)
    }

    /// The tokenizer implementation.
    pub fn backend(&self) -> &Backend {
        &self.inner
    }
}
