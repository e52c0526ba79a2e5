//! Incremental detokenizing: turns a growing list of ids into text pieces,
//! never splitting a UTF-8 character that byte-fallback tokens spell out over
//! several steps.

use gemma_core::Result;
use gemma_tokenizer::GemmaTokenizer;

/// Emits the text each new token adds, once it forms complete characters.
#[derive(Debug, Default, Clone)]
pub struct TokenStreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl TokenStreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a token; returns new complete text, if any.
    pub fn push(&mut self, tok: &GemmaTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tok.decode_text(&self.ids[self.prefix_offset..self.read_offset])?;
        let now = tok.decode_text(&self.ids[self.prefix_offset..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            if let Some(piece) = now.get(before.len()..) {
                let piece = piece.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                return Ok(Some(piece));
            }
        }
        Ok(None)
    }

    /// Text still held back (an incomplete character at the very end);
    /// invalid bytes come out as U+FFFD.
    pub fn flush(&mut self, tok: &GemmaTokenizer) -> Result<Option<String>> {
        let before = tok.decode_text(&self.ids[self.prefix_offset..self.read_offset])?;
        let now = tok.decode_text(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(now.get(before.len()..).filter(|s| !s.is_empty()).map(str::to_string))
    }
}
