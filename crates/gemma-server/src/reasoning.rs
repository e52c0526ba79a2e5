//! Thinking mode (Gemma 4): the template's `enable_thinking` switch, and the
//! answer split into its thought (`<|channel>thought\n…<channel|>`, returned
//! as OpenAI's `reasoning_content`) and its reply (`content`). Off unless
//! the request or `gemma serve --enable-thinking` turns it on; earlier
//! thoughts are the template's to strip from the next prompt (the published
//! Gemma 4 templates do).

use gemma::Gemma;
use gemma_engine::TokenEvent;
use serde_json::{Map, Value};

/// The label a thought starts with.
const LABEL: &str = "thought\n";

/// A model's thinking protocol: the ids that open and close a thought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThinkingSyntax {
    pub open: u32,
    pub close: u32,
}

impl ThinkingSyntax {
    /// Gemma 4's, when the vocabulary has its channel tokens and the chat
    /// template has the `enable_thinking` switch.
    pub fn detect(g: &Gemma) -> Option<Self> {
        let t = &g.tokenizer;
        let (open, close) = (t.token_to_id("<|channel>")?, t.token_to_id("<channel|>")?);
        t.chat_template.mentions("enable_thinking").then_some(Self { open, close })
    }
}

/// Whether a chat request thinks, and the template variables it passes:
/// `chat_template_kwargs` (vLLM's field) as given, with `enable_thinking`
/// from it, else from `reasoning_effort` (`none`/`minimal` off, `low`/
/// `medium`/`high` on), else the server's default. A grammar-constrained
/// answer (`constrained`) cannot start with a thought: thinking is then off,
/// and asking for both is an error.
pub(crate) fn template_kwargs(
    v: &Value,
    server_default: bool,
    syntax: Option<ThinkingSyntax>,
    constrained: bool,
) -> Result<(bool, Map<String, Value>), String> {
    let mut kwargs = match v.get("chat_template_kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(other) => return Err(format!("'chat_template_kwargs' must be an object, found {other}")),
    };
    let explicit = match (kwargs.get("enable_thinking"), v.get("reasoning_effort")) {
        (Some(Value::Bool(b)), _) => Some(*b),
        (Some(other), _) => return Err(format!("'chat_template_kwargs.enable_thinking' must be a boolean, found {other}")),
        (None, None | Some(Value::Null)) => None,
        (None, Some(Value::String(e))) => match e.as_str() {
            "none" | "minimal" => Some(false),
            "low" | "medium" | "high" => Some(true),
            other => return Err(format!("'reasoning_effort' must be none, minimal, low, medium or high, found '{other}'")),
        },
        (None, Some(other)) => return Err(format!("'reasoning_effort' must be a string, found {other}")),
    };
    if explicit == Some(true) && syntax.is_none() {
        return Err("this model has no thinking mode ('reasoning_effort' / 'enable_thinking')".into());
    }
    if explicit == Some(true) && constrained {
        return Err("thinking cannot be combined with a constrained answer ('response_format' or a forced tool call)".into());
    }
    let on = syntax.is_some() && !constrained && explicit.unwrap_or(server_default);
    if syntax.is_some() {
        kwargs.insert("enable_thinking".into(), Value::Bool(on));
    }
    Ok((on, kwargs))
}

/// What one generated token is, once the thought is split off.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    /// Text of the thought.
    Reasoning(String),
    /// A token of the reply (its text with leading whitespace after the
    /// thought removed).
    Content(TokenEvent),
    /// Nothing to show (a channel token, the label, held whitespace).
    Skip,
}

/// Splits a streamed answer into thought and reply, token by token.
#[derive(Debug, Clone)]
pub(crate) struct Splitter {
    syn: ThinkingSyntax,
    in_thought: bool,
    /// Text seen since `<|channel>` while it may still be the label.
    label: Option<String>,
    /// Whitespace held back inside a thought (dropped before `<channel|>`).
    ws: String,
    /// Just after `<channel|>`: the reply's leading whitespace is dropped.
    after_close: bool,
    /// Whether the last token with text was in a thought (where text the
    /// decoder releases at the end belongs).
    last_in_thought: bool,
}

impl Splitter {
    /// A splitter for an answer to `prompt` (which may end inside an open
    /// thought: the published templates open one after a tool response).
    pub fn new(syn: ThinkingSyntax, prompt: &[u32]) -> Self {
        let last = |id: u32| prompt.iter().rposition(|&t| t == id);
        let in_thought = match (last(syn.open), last(syn.close)) {
            (Some(o), Some(c)) => o > c,
            (Some(_), None) => true,
            _ => false,
        };
        Self { syn, in_thought, label: None, ws: String::new(), after_close: false, last_in_thought: in_thought }
    }

    /// Classify the next generated token.
    pub fn push(&mut self, t: &TokenEvent) -> Piece {
        if t.id == self.syn.open {
            self.in_thought = true;
            self.label = Some(String::new());
            self.ws.clear();
            return Piece::Skip;
        }
        if t.id == self.syn.close {
            self.in_thought = false;
            self.after_close = true;
            self.ws.clear();
            // A thought that was only (part of) the label.
            return match self.label.take().filter(|l| !l.is_empty()) {
                Some(l) => Piece::Reasoning(l.trim_end().to_string()),
                None => Piece::Skip,
            };
        }
        self.last_in_thought = self.in_thought;
        if self.in_thought {
            let mut text = t.text.clone();
            if let Some(l) = &mut self.label {
                l.push_str(&text);
                if l == LABEL {
                    self.label = None;
                    return Piece::Skip;
                }
                if LABEL.starts_with(l.as_str()) {
                    return Piece::Skip;
                }
                let l = self.label.take().expect("checked");
                text = l.strip_prefix(LABEL).map(str::to_string).unwrap_or(l);
            }
            let body_end = text.trim_end().len();
            if body_end == 0 {
                self.ws.push_str(&text);
                return Piece::Skip;
            }
            let out = std::mem::take(&mut self.ws) + &text[..body_end];
            self.ws.push_str(&text[body_end..]);
            return Piece::Reasoning(out);
        }
        let mut t = t.clone();
        if self.after_close {
            let trimmed = t.text.trim_start();
            if trimmed.is_empty() && !t.text.is_empty() {
                return Piece::Skip;
            }
            t.text = trimmed.to_string();
            self.after_close = t.text.is_empty();
        }
        Piece::Content(t)
    }

    /// Whether text released after the last token (an incomplete character
    /// or a held stop-string prefix) belongs to the thought: where the last
    /// token with text was, not where a later channel token left the answer.
    pub fn tail_in_thought(&self) -> bool {
        self.last_in_thought
    }
}

/// A finished answer split: the thought's text, the reply's tokens, and
/// whether text released at the end belongs to the thought.
pub(crate) fn split_all(syn: ThinkingSyntax, prompt: &[u32], tokens: &[TokenEvent]) -> (String, Vec<TokenEvent>, bool) {
    let mut sp = Splitter::new(syn, prompt);
    let mut reasoning = String::new();
    let mut content = Vec::with_capacity(tokens.len());
    for t in tokens {
        match sp.push(t) {
            Piece::Reasoning(r) => reasoning.push_str(&r),
            Piece::Content(c) => content.push(c),
            Piece::Skip => {}
        }
    }
    (reasoning, content, sp.tail_in_thought())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: ThinkingSyntax = ThinkingSyntax { open: 100, close: 101 };

    fn tok(id: u32, text: &str) -> TokenEvent {
        TokenEvent { id, text: text.into(), special: id >= 100, logprob: None, top: Vec::new() }
    }

    fn run(prompt: &[u32], toks: &[TokenEvent]) -> (String, String) {
        let (r, c, _) = split_all(SYN, prompt, toks);
        (r, c.iter().map(|t| t.text.as_str()).collect())
    }

    #[test]
    fn thought_then_reply() {
        let toks = [
            tok(100, ""),
            tok(1, "thought"),
            tok(2, "\n"),
            tok(3, "Rayleigh"),
            tok(4, " scattering"),
            tok(2, "\n"),
            tok(101, ""),
            tok(2, "\n"),
            tok(5, "Blue"),
            tok(6, " light."),
        ];
        assert_eq!(run(&[7], &toks), ("Rayleigh scattering".into(), "Blue light.".into()));
    }

    #[test]
    fn label_split_oddly_or_missing() {
        let toks = [tok(100, ""), tok(1, "tho"), tok(2, "ught\nA"), tok(3, "B"), tok(101, ""), tok(5, "C")];
        assert_eq!(run(&[], &toks), ("AB".into(), "C".into()));
        let toks = [tok(100, ""), tok(1, "x"), tok(3, "y"), tok(101, ""), tok(5, "z")];
        assert_eq!(run(&[], &toks), ("xy".into(), "z".into()));
        let toks = [tok(100, ""), tok(1, "thou"), tok(101, ""), tok(5, "z")];
        assert_eq!(run(&[], &toks), ("thou".into(), "z".into()));
    }

    #[test]
    fn prompt_may_open_the_thought() {
        // The template wrote `<|channel>thought\n` after a tool response.
        let toks = [tok(3, "plan"), tok(101, ""), tok(5, "done")];
        assert_eq!(run(&[7, 100, 1, 2], &toks), ("plan".into(), "done".into()));
        // A closed thought earlier in the prompt does not count.
        assert_eq!(run(&[100, 101, 7], &[tok(5, "hi")]), ("".into(), "hi".into()));
    }

    #[test]
    fn released_text_goes_where_its_tokens_were() {
        // Bytes of an unfinished character, then a new thought that never closes.
        let toks = [tok(100, ""), tok(3, "a"), tok(101, ""), tok(5, "b"), tok(6, ""), tok(100, ""), tok(100, "")];
        let mut sp = Splitter::new(SYN, &[]);
        toks.iter().for_each(|t| drop(sp.push(t)));
        assert!(!sp.tail_in_thought());
        let mut sp = Splitter::new(SYN, &[]);
        [tok(100, ""), tok(3, "")].iter().for_each(|t| drop(sp.push(t)));
        assert!(sp.tail_in_thought());
    }

    #[test]
    fn no_thought_is_all_reply() {
        assert_eq!(run(&[], &[tok(5, " hi"), tok(6, " there")]), ("".into(), " hi there".into()));
    }

    #[test]
    fn kwargs_follow_the_request() {
        let syn = Some(SYN);
        let on = |v: Value, def: bool| template_kwargs(&v, def, syn, false).map(|(on, k)| (on, k.get("enable_thinking").cloned()));
        assert_eq!(on(serde_json::json!({}), false).unwrap(), (false, Some(Value::Bool(false))));
        assert_eq!(on(serde_json::json!({}), true).unwrap(), (true, Some(Value::Bool(true))));
        assert!(on(serde_json::json!({"reasoning_effort": "high"}), false).unwrap().0);
        assert!(!on(serde_json::json!({"reasoning_effort": "none"}), true).unwrap().0);
        assert!(on(serde_json::json!({"chat_template_kwargs": {"enable_thinking": true}}), false).unwrap().0);
        assert!(on(serde_json::json!({"reasoning_effort": "max"}), false).unwrap_err().contains("reasoning_effort"));
        assert!(on(serde_json::json!({"chat_template_kwargs": 3}), false).is_err());
        // No thinking protocol: off is fine, on is an error; nothing is passed.
        assert_eq!(template_kwargs(&serde_json::json!({}), true, None, false).unwrap(), (false, Map::new()));
        assert!(template_kwargs(&serde_json::json!({"reasoning_effort": "low"}), false, None, false).is_err());
        // A grammar: off by default, an error when asked for.
        assert!(!template_kwargs(&serde_json::json!({}), true, syn, true).unwrap().0);
        assert!(template_kwargs(&serde_json::json!({"reasoning_effort": "low"}), false, syn, true).is_err());
    }
}
