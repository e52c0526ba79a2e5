//! A [`GemmaTokenizer`] from GGUF `tokenizer.ggml.*` metadata.

use gemma_model::gguf_keys as keys;
use gemma_core::{GemmaError, Result};
use gemma_formats::{GgufFile, GgufValue};
use gemma_tokenizer::{Backend, ChatTemplate, GemmaTokenizer, SpmTokenizer, TokenKind};

fn array<'a>(file: &'a GgufFile, key: &str) -> Result<&'a [GgufValue]> {
    file.get(key)
        .ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{key}` is missing")))?
        .as_array()
        .ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{key}` is not an array")))
}

/// Build the tokenizer stored in a GGUF file: SentencePiece (model
/// `llama`, Gemma 1–3) or Gemma 4's BPE with merges (model `gemma4`).
pub fn from_gguf(file: &GgufFile) -> Result<GemmaTokenizer> {
    let bpe = match file.get(keys::TOKENIZER_MODEL).and_then(GgufValue::as_str) {
        Some("llama") => false,
        Some("gemma4") => true,
        Some(other) => return Err(GemmaError::Unsupported(format!("GGUF tokenizer model `{other}` (Gemma files use `llama`, SentencePiece, or `gemma4`, BPE)"))),
        None => return Err(GemmaError::format(&file.path, "metadata `tokenizer.ggml.model` is missing")),
    };
    let bad = |k: &str| GemmaError::format(&file.path, format!("metadata `{k}` has elements of the wrong type"));
    let tokens = array(file, keys::TOKENIZER_TOKENS)?
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(keys::TOKENIZER_TOKENS)))
        .collect::<Result<Vec<_>>>()?;
    let scores = match file.get(keys::TOKENIZER_SCORES) {
        Some(_) => array(file, keys::TOKENIZER_SCORES)?
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| bad(keys::TOKENIZER_SCORES)))
            .collect::<Result<Vec<_>>>()?,
        None => vec![0.0; tokens.len()],
    };
    let kinds = match file.get(keys::TOKENIZER_TOKEN_TYPE) {
        Some(_) => array(file, keys::TOKENIZER_TOKEN_TYPE)?
            .iter()
            .map(|v| v.as_i64().map(TokenKind::from_id).ok_or_else(|| bad(keys::TOKENIZER_TOKEN_TYPE)))
            .collect::<Result<Vec<_>>>()?,
        None => vec![TokenKind::Normal; tokens.len()],
    };
    let flag = |k: &str, default: bool| file.get(k).and_then(GgufValue::as_bool).unwrap_or(default);
    let name_of = |key: &str| -> Result<Option<String>> {
        match file.get(key).and_then(GgufValue::as_u64) {
            None => Ok(None),
            Some(id) => tokens
                .get(id as usize)
                .cloned()
                .map(Some)
                .ok_or_else(|| GemmaError::format(&file.path, format!("metadata `{key}` = {id} is outside the vocabulary of {}", tokens.len()))),
        }
    };
    let bos = name_of(keys::BOS_TOKEN_ID)?;
    let eos = name_of(keys::EOS_TOKEN_ID)?;
    let template = match file.get(keys::CHAT_TEMPLATE).and_then(GgufValue::as_str) {
        Some(src) => ChatTemplate::new(src)?,
        None => ChatTemplate::gemma(),
    };
    if bpe {
        let merges = array(file, keys::TOKENIZER_MERGES)?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(keys::TOKENIZER_MERGES)))
            .collect::<Result<Vec<_>>>()?;
        let hf = Backend::bpe_from_pieces(&tokens, &kinds, &merges).map_err(|e| GemmaError::format(&file.path, format!("gemma4 tokenizer: {e}")))?;
        // llama.cpp always adds BOS for Gemma 4.
        return GemmaTokenizer::from_parts(hf, bos, eos, true, template);
    }
    let spm = SpmTokenizer::new(tokens, scores, kinds, flag(keys::ADD_SPACE_PREFIX, false))?;
    GemmaTokenizer::from_parts(Backend::Spm(Box::new(spm)), bos, eos, flag(keys::ADD_BOS, true), template)
}
