//! Training data: JSON Lines in the three formats TRL's `SFTTrainer` takes,
//! tokenized and masked as it does.
//!
//! - `{"text": …}`: BOS as the tokenizer adds it, EOS appended, every token learned.
//! - `{"messages": [{"role", "content"}, …]}`: the chat template (the model's
//!   own or the built-in Gemma one); every token learned, or with
//!   `--loss assistant-only` the assistant turns including their
//!   `<end_of_turn>` and the newline after it (TRL's Gemma training template).
//! - `{"prompt": …, "completion": …}`: strings (EOS appended) or message
//!   lists; the completion is learned (`auto`), or everything (`all`).
//!
//! Sequences longer than `--max-length` are cut at the end; a line with
//! nothing left to learn is skipped and counted.

use crate::backward::Example;
use crate::{Result, TrainError};
use gemma_tokenizer::chat::ChatMessage;
use gemma_tokenizer::GemmaTokenizer;
use serde_json::Value;
use std::path::Path;

/// Which tokens the loss covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMask {
    /// Completion only for prompt/completion data, else every token (TRL's default).
    Auto,
    /// Every token.
    All,
    /// The completion of prompt/completion data.
    CompletionOnly,
    /// Assistant turns (with their `<end_of_turn>`) of conversations.
    AssistantOnly,
}

impl LossMask {
    /// Parse `auto`, `all`, `completion-only`, `assistant-only`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "all" => Some(Self::All),
            "completion-only" | "completion_only" => Some(Self::CompletionOnly),
            "assistant-only" | "assistant_only" => Some(Self::AssistantOnly),
            _ => None,
        }
    }
}

/// A tokenized data file.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// One example per kept line.
    pub examples: Vec<Example>,
    /// Lines dropped because nothing was left to learn after truncation.
    pub skipped: usize,
}

impl Dataset {
    /// Total tokens.
    pub fn tokens(&self) -> usize {
        self.examples.iter().map(|e| e.ids.len()).sum()
    }
}

/// Read and tokenize a JSONL file.
pub fn load(path: &Path, tok: &GemmaTokenizer, mask: LossMask, max_length: usize) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io(path.display().to_string(), e))?;
    let mut ds = Dataset::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| TrainError::Invalid(format!("{}: not valid JSON ({e})", at())))?;
        let mut ex = example(&v, tok, mask).map_err(|e| TrainError::Invalid(format!("{}: {e}", at())))?;
        ex.ids.truncate(max_length);
        ex.targets.truncate(max_length);
        if ex.count() == 0 {
            ds.skipped += 1;
        } else {
            ds.examples.push(ex);
        }
    }
    if ds.examples.is_empty() {
        return Err(TrainError::Invalid(format!("{}: no training examples (empty file, or every line had nothing to learn{})", path.display(), if ds.skipped > 0 { format!("; {} skipped", ds.skipped) } else { String::new() })));
    }
    Ok(ds)
}

/// One line as an example.
pub fn example(v: &Value, tok: &GemmaTokenizer, mask: LossMask) -> std::result::Result<Example, String> {
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let enc = |s: &str, bos: bool| tok.encode(s, bos).map_err(|e| e.to_string());
    let eos = tok.token_to_id(&tok.eos_token).ok_or("the tokenizer has no EOS token")?;
    if let Some(t) = obj.get("text") {
        let t = t.as_str().ok_or("'text' must be a string")?;
        if matches!(mask, LossMask::CompletionOnly | LossMask::AssistantOnly) {
            return Err(format!("a 'text' line has no prompt or assistant turns for --loss {}", name(mask)));
        }
        let mut ids = enc(t, tok.add_bos)?;
        ids.push(eos);
        return Ok(Example { targets: vec![true; ids.len()], ids });
    }
    if let Some(m) = obj.get("messages") {
        let msgs = messages(m, "messages")?;
        return match mask {
            LossMask::AssistantOnly => assistant_only(&msgs, tok),
            LossMask::CompletionOnly => Err("a 'messages' line has no prompt/completion split for --loss completion-only (use assistant-only)".into()),
            _ => {
                let text = tok.apply_chat_template(&msgs, false).map_err(|e| e.to_string())?;
                let ids = enc(&text, tok.add_bos)?;
                Ok(Example { targets: vec![true; ids.len()], ids })
            }
        };
    }
    match (obj.get("prompt"), obj.get("completion")) {
        (Some(Value::String(p)), Some(Value::String(c))) => {
            if mask == LossMask::AssistantOnly {
                return Err("a plain prompt/completion line has no assistant turns for --loss assistant-only".into());
            }
            let plen = enc(p, tok.add_bos)?.len();
            let mut ids = enc(&format!("{p}{c}"), tok.add_bos)?;
            ids.push(eos);
            let all = mask == LossMask::All;
            Ok(Example { targets: (0..ids.len()).map(|i| all || i >= plen).collect(), ids })
        }
        (Some(p @ Value::Array(_)), Some(c @ Value::Array(_))) => {
            let mut msgs = messages(p, "prompt")?;
            let plen_text = tok.apply_chat_template(&msgs, true).map_err(|e| e.to_string())?;
            msgs.extend(messages(c, "completion")?);
            if mask == LossMask::AssistantOnly {
                return assistant_only(&msgs, tok);
            }
            let text = tok.apply_chat_template(&msgs, false).map_err(|e| e.to_string())?;
            let plen = enc(&plen_text, tok.add_bos)?.len();
            let ids = enc(&text, tok.add_bos)?;
            let all = mask == LossMask::All;
            Ok(Example { targets: (0..ids.len()).map(|i| all || i >= plen).collect(), ids })
        }
        (Some(_), Some(_)) => Err("'prompt' and 'completion' must both be strings or both be message lists".into()),
        _ => Err("expected a \"text\", \"messages\" or \"prompt\" + \"completion\" field".into()),
    }
}

fn name(m: LossMask) -> &'static str {
    match m {
        LossMask::Auto => "auto",
        LossMask::All => "all",
        LossMask::CompletionOnly => "completion-only",
        LossMask::AssistantOnly => "assistant-only",
    }
}

/// A message list, checking roles.
fn messages(v: &Value, field: &str) -> std::result::Result<Vec<ChatMessage>, String> {
    let arr = v.as_array().ok_or_else(|| format!("'{field}' must be a list of messages"))?;
    if arr.is_empty() {
        return Err(format!("'{field}' is empty"));
    }
    arr.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| format!("{field}[{i}] has no string 'role'"))?;
            if !["system", "user", "assistant", "model"].contains(&role) {
                return Err(format!("{field}[{i}] has unknown role '{role}' (expected system, user or assistant)"));
            }
            let content = m.get("content").and_then(Value::as_str).ok_or_else(|| format!("{field}[{i}] has no string 'content'"))?;
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// Conversation ids with the assistant turns (their content,
/// `<end_of_turn>` and newline) as targets. The text is cut where each assistant turn
/// starts and ends and the pieces are tokenized one by one, so a target
/// span is exactly that turn's tokens.
fn assistant_only(msgs: &[ChatMessage], tok: &GemmaTokenizer) -> std::result::Result<Example, String> {
    let render = |m: &[ChatMessage], gen: bool| tok.apply_chat_template(m, gen).map_err(|e| e.to_string());
    let full = render(msgs, false)?;
    // Byte spans of the assistant turns in `full`.
    let mut spans = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.role != "assistant" && m.role != "model" {
            continue;
        }
        let start = render(&msgs[..i], true)?.len();
        let upto = render(&msgs[..=i], false)?;
        if !full.starts_with(&upto) || !upto.is_char_boundary(start) || start > upto.len() {
            return Err("the chat template does not render conversations prefix by prefix, which --loss assistant-only needs".into());
        }
        // Through `<end_of_turn>` and the newline the template writes after
        // it, as TRL's Gemma training templates mark the generation.
        let end = upto[start..].find("<end_of_turn>").map_or(upto.len(), |p| start + p + "<end_of_turn>".len());
        let end = if upto[end..].starts_with('\n') { end + 1 } else { end };
        spans.push((start, end));
    }
    if spans.is_empty() {
        return Err("the conversation has no assistant turn to learn".into());
    }
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    let mut at = 0;
    for (s, e) in spans.into_iter().chain(std::iter::once((full.len(), full.len()))) {
        for (piece, learn) in [(&full[at..s], false), (&full[s..e], true)] {
            if piece.is_empty() {
                continue;
            }
            let p = tok.encode(piece, ids.is_empty() && tok.add_bos).map_err(|e| e.to_string())?;
            targets.extend(std::iter::repeat_n(learn, p.len()));
            ids.extend(p);
        }
        at = e;
    }
    Ok(Example { ids, targets })
}
