//! SentencePiece-style tokenizer from GGUF metadata (`tokenizer.ggml.*` with
//! model `llama`): token strings, scores and types. Reproduces llama.cpp's
//! algorithm: special and user-defined tokens are split out of the raw text
//! first (longest first), then each remaining fragment has its spaces
//! escaped to `▁` and is merged pair by pair, highest-scoring merge first,
//! with byte fallback for characters the vocabulary lacks.

use gemma_core::{GemmaError, Result};
use std::collections::{BinaryHeap, HashMap};

/// Token type ids as GGUF stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// 1: an ordinary piece.
    Normal,
    /// 2: `<unk>`.
    Unknown,
    /// 3: control tokens (`<bos>`, `<start_of_turn>`, …).
    Control,
    /// 4: user-defined pieces, matched verbatim in raw text (`\n\n`, runs of spaces, HTML tags).
    UserDefined,
    /// 5: unused.
    Unused,
    /// 6: byte-fallback tokens `<0x00>`..`<0xFF>`.
    Byte,
}

impl TokenKind {
    /// From the GGUF type id (unknown ids count as normal).
    pub fn from_id(id: i64) -> Self {
        match id {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// The vocabulary and merge scores of an SPM tokenizer.
#[derive(Debug, Clone)]
pub struct SpmTokenizer {
    tokens: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<TokenKind>,
    lookup: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    /// Tokens split out of raw text before merging, longest first.
    specials: Vec<u32>,
    add_space_prefix: bool,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first; on ties the leftmost pair (as llama.cpp).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&o.score).then_with(|| o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl SpmTokenizer {
    /// Build from GGUF's parallel arrays.
    pub fn new(tokens: Vec<String>, scores: Vec<f32>, kinds: Vec<TokenKind>, add_space_prefix: bool) -> Result<Self> {
        if tokens.is_empty() || scores.len() != tokens.len() || kinds.len() != tokens.len() {
            return Err(GemmaError::Tokenizer(format!(
                "vocabulary arrays disagree: {} tokens, {} scores, {} types",
                tokens.len(),
                scores.len(),
                kinds.len()
            )));
        }
        let mut lookup = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            lookup.entry(t.clone()).or_insert(i as u32);
        }
        let mut byte_ids = [None; 256];
        for (i, t) in tokens.iter().enumerate() {
            if kinds[i] == TokenKind::Byte {
                if let Some(b) = t.strip_prefix("<0x").and_then(|s| s.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    byte_ids[b as usize] = Some(i as u32);
                }
            }
        }
        let mut specials: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| {
                matches!(kinds[i as usize], TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown) && !tokens[i as usize].is_empty()
            })
            .collect();
        specials.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()).then(a.cmp(&b)));
        Ok(Self { tokens, scores, kinds, lookup, byte_ids, specials, add_space_prefix })
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True for an empty vocabulary (never, once built).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of a token string.
    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.lookup.get(t).copied()
    }

    /// The string of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The kind of a token id.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Tokenize; `parse_special` turns control tokens written in the text
    /// (`<start_of_turn>`) into their ids. User-defined tokens are always matched.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        // Fragments: Ok(raw text range) or Err(token id).
        let mut frags: Vec<std::result::Result<(usize, usize), u32>> = vec![Ok((0, text.len()))];
        for &id in &self.specials {
            let kind = self.kinds[id as usize];
            if !parse_special && matches!(kind, TokenKind::Control | TokenKind::Unknown) {
                continue;
            }
            let pat = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Ok((mut s, e)) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(i) = text[s..e].find(pat) {
                    if i > 0 {
                        next.push(Ok((s, s + i)));
                    }
                    next.push(Err(id));
                    s += i + pat.len();
                }
                if s < e {
                    next.push(Ok((s, e)));
                }
            }
            frags = next;
        }
        let mut out = Vec::new();
        let mut prev_special = true;
        for f in frags {
            match f {
                Err(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Ok((s, e)) => {
                    let mut piece = String::with_capacity(e - s + 3);
                    if self.add_space_prefix && prev_special {
                        piece.push(' ');
                    }
                    piece.push_str(&text[s..e]);
                    self.encode_fragment(&piece.replace(' ', "\u{2581}"), &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Merge one escaped fragment into tokens.
    fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, ch)) in text.char_indices().enumerate() {
            symbols.push(Symbol { start, len: ch.len_utf8(), prev: i.checked_sub(1), next: None });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::new();
        let try_add = |heap: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else { return };
            let (a, b) = (symbols[l], symbols[r]);
            let piece = &text[a.start..a.start + a.len + b.len];
            if let Some(&id) = self.lookup.get(piece) {
                heap.push(Bigram { score: self.scores[id as usize], left: l, right: r, len: piece.len() });
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut heap, &symbols, Some(i - 1), Some(i));
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (bg.left, bg.right);
            if symbols[l].len == 0 || symbols[r].len == 0 || symbols[l].len + symbols[r].len != bg.len {
                continue; // stale
            }
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            symbols[l].next = symbols[r].next;
            if let Some(n) = symbols[r].next {
                symbols[n].prev = Some(l);
            }
            try_add(&mut heap, &symbols, symbols[l].prev, Some(l));
            try_add(&mut heap, &symbols, Some(l), symbols[l].next);
        }
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let s = symbols[k];
            self.emit(&text[s.start..s.start + s.len], out);
            i = s.next;
        }
    }

    /// Emit the token of a final symbol. Every merged piece is a token; a
    /// single character missing from the vocabulary becomes byte tokens.
    fn emit(&self, piece: &str, out: &mut Vec<u32>) {
        if let Some(&id) = self.lookup.get(piece) {
            out.push(id);
            return;
        }
        for b in piece.bytes() {
            if let Some(id) = self.byte_ids[b as usize] {
                out.push(id);
            } else if let Some(&unk) = self.lookup.get("<unk>") {
                out.push(unk);
            }
        }
    }

    /// The bytes a token stands for: `▁` becomes a space, byte tokens their
    /// byte, control tokens nothing unless `keep_control`.
    pub fn piece_bytes(&self, id: u32, keep_control: bool, out: &mut Vec<u8>) {
        let Some(t) = self.tokens.get(id as usize) else { return };
        match self.kinds[id as usize] {
            TokenKind::Normal | TokenKind::Unused => out.extend_from_slice(t.replace('\u{2581}', " ").as_bytes()),
            TokenKind::UserDefined => out.extend_from_slice(t.as_bytes()),
            TokenKind::Byte => match u8::from_str_radix(t.trim_start_matches("<0x").trim_end_matches('>'), 16) {
                Ok(b) => out.push(b),
                Err(_) => out.extend_from_slice(t.as_bytes()),
            },
            TokenKind::Control | TokenKind::Unknown => {
                if keep_control {
                    out.extend_from_slice(t.as_bytes())
                }
            }
        }
    }

    /// Decode ids to text (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32], keep_control: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.piece_bytes(id, keep_control, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> SpmTokenizer {
        let mut toks: Vec<(String, f32, TokenKind)> = vec![
            ("<unk>".into(), 0.0, TokenKind::Unknown),
            ("<bos>".into(), 0.0, TokenKind::Control),
            ("<start_of_turn>".into(), 0.0, TokenKind::Control),
            ("\n\n".into(), 0.0, TokenKind::UserDefined),
        ];
        for b in 0..=255u8 {
            toks.push((format!("<0x{b:02X}>"), 0.0, TokenKind::Byte));
        }
        for (t, s) in [
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("he", -3.0),
            ("ll", -3.0),
            ("hell", -4.0),
            ("hello", -5.0),
            ("▁hello", -6.0),
        ] {
            toks.push((t.into(), s, TokenKind::Normal));
        }
        let (t, rest): (Vec<_>, Vec<_>) = toks.into_iter().map(|(a, b, c)| (a, (b, c))).unzip();
        let (s, k) = rest.into_iter().unzip();
        SpmTokenizer::new(t, s, k, false).unwrap()
    }

    #[test]
    fn merges_specials_and_byte_fallback() {
        let v = vocab();
        let id = |t: &str| v.token_to_id(t).unwrap();
        assert_eq!(v.encode("hello", true), vec![id("hello")]);
        assert_eq!(v.encode(" hello", true), vec![id("▁hello")]);
        assert_eq!(v.encode("<start_of_turn>hello\n\nh", true), vec![id("<start_of_turn>"), id("hello"), id("\n\n"), id("h")]);
        // Control tokens stay text without parse_special; user-defined ones still match.
        assert!(!v.encode("<bos>", false).contains(&id("<bos>")));
        assert_eq!(v.encode("é", true), vec![id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(v.decode(&v.encode("<bos> hello é\n\n", true), false), " hello é\n\n");
    }
}
