//! Zero-shot evaluation of a local task file through the engine (what
//! `gemma eval` runs), scored as lm-evaluation-harness scores the same items
//! through `/v1/completions`:
//!
//! - `{"context", "choices", "answer"}`: multiple choice by log-likelihood.
//!   Each choice is appended to the context exactly as written; as lm-eval,
//!   trailing whitespace of the context moves to the front of the choice, the
//!   context and context+choice are tokenized without BOS, and the choice's
//!   tokens are what context+choice has after the context's. The model sees
//!   BOS first (the server prepends it the same way). `acc`: the choice with
//!   the highest summed log-probability is the answer; `acc_norm`: that sum
//!   divided by the choice's length in characters.
//! - `{"prompt", "target", "until"}`: greedy generation (BOS, then the
//!   prompt) until one of `until` or 256 tokens (fewer when the context is
//!   shorter), `exact_match` after trimming whitespace on both sides.

use crate::{Engine, Event, Handle, Request, SubmitError};
use gemma::Gemma;
use serde::Deserialize;
use std::path::Path;

/// lm-eval's default `max_gen_toks`.
pub const MAX_GEN_TOKENS: usize = 256;

/// Why a task could not be run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The task file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a task item.
    #[error("{path} line {line}: {message}")]
    Line {
        /// The task file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file holds no items.
    #[error("{0}: no task items (one JSON object per line)")]
    Empty(String),
    /// The engine refused or failed an item.
    #[error("item {line}: {message}")]
    Engine {
        /// 1-based line number of the item.
        line: usize,
        /// What went wrong.
        message: String,
    },
}

/// A multiple-choice item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceItem {
    /// Text before each choice.
    pub context: String,
    /// The candidate continuations.
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub answer: usize,
}

/// A generation item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateItem {
    /// The prompt.
    pub prompt: String,
    /// The expected answer.
    pub target: String,
    /// Strings that end the generation.
    #[serde(default)]
    pub until: Vec<String>,
}

/// One line of a task file.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskItem {
    /// Scored by log-likelihood.
    Choice(ChoiceItem),
    /// Scored by exact match of a greedy generation.
    Generate(GenerateItem),
}

/// Parse a task file: one JSON object per line (blank lines skipped).
pub fn parse_task(text: &str, path: &str) -> Result<Vec<(usize, TaskItem)>, EvalError> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| EvalError::Line { path: path.to_string(), line: line_no, message };
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| err("must be a JSON object".into()))?;
        let item = if obj.contains_key("choices") {
            let c: ChoiceItem = serde_json::from_value(v).map_err(|e| err(format!("a multiple-choice item needs {{\"context\": str, \"choices\": [str, …], \"answer\": int}}: {e}")))?;
            if c.choices.is_empty() {
                return Err(err("'choices' is empty".into()));
            }
            if c.choices.iter().any(String::is_empty) {
                return Err(err("a choice is an empty string (nothing to score)".into()));
            }
            if c.answer >= c.choices.len() {
                return Err(err(format!("'answer' is {} but there are {} choices", c.answer, c.choices.len())));
            }
            TaskItem::Choice(c)
        } else if obj.contains_key("prompt") {
            let g: GenerateItem = serde_json::from_value(v).map_err(|e| err(format!("a generation item needs {{\"prompt\": str, \"target\": str, \"until\": [str]}}: {e}")))?;
            if g.until.iter().any(String::is_empty) {
                return Err(err("'until' holds an empty string".into()));
            }
            TaskItem::Generate(g)
        } else {
            return Err(err("neither a multiple-choice item (\"choices\") nor a generation item (\"prompt\")".into()));
        };
        items.push((line_no, item));
    }
    if items.is_empty() {
        return Err(EvalError::Empty(path.to_string()));
    }
    Ok(items)
}

/// Read and parse a task file.
pub fn read_task(path: &Path) -> Result<Vec<(usize, TaskItem)>, EvalError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io { path: p.clone(), source })?;
    parse_task(&text, &p)
}

/// Scores of a task run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EvalReport {
    /// Items scored.
    pub n: usize,
    /// Multiple-choice items.
    pub n_choice: usize,
    /// Generation items.
    pub n_generate: usize,
    /// Fraction of multiple-choice items answered right (by summed logprob).
    pub acc: Option<f64>,
    /// The same, each sum divided by the choice's length in characters.
    pub acc_norm: Option<f64>,
    /// Fraction of generation items matched exactly (trimmed).
    pub exact_match: Option<f64>,
    /// Per item: the summed log-likelihood of each choice (multiple choice)
    /// or the generated text, in file order.
    pub items: Vec<ItemResult>,
}

/// What one item produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemResult {
    /// Summed log-probability of each choice's tokens.
    Choice {
        /// 1-based line number.
        line: usize,
        /// One sum per choice.
        loglikelihoods: Vec<f64>,
        /// Per choice: the ids the model saw (BOS first) and the index of
        /// the first scored one.
        scored: Vec<(Vec<u32>, usize)>,
        /// Whether argmax of the sums is the answer.
        correct: bool,
        /// Whether argmax of the length-normalized sums is the answer.
        correct_norm: bool,
    },
    /// A greedy generation.
    Generate {
        /// 1-based line number.
        line: usize,
        /// The generated text (cut at the first `until`).
        text: String,
        /// Whether it equals the target after trimming.
        correct: bool,
    },
}

/// The tokens of a context/continuation pair as lm-eval splits them.
pub fn encode_pair(g: &Gemma, context: &str, choice: &str) -> gemma::Result<(Vec<u32>, Vec<u32>)> {
    let trimmed = context.trim_end();
    let (ctx, cont) = (trimmed, format!("{}{choice}", &context[trimmed.len()..]));
    let whole = g.tokenizer.encode(&format!("{ctx}{cont}"), false)?;
    let ctx_ids = g.tokenizer.encode(ctx, false)?;
    let cont_ids = whole.get(ctx_ids.len()..).unwrap_or_default().to_vec();
    Ok((ctx_ids, cont_ids))
}

/// The engine request that scores `choice` after `context`, and the number
/// of choice tokens.
pub fn choice_request(g: &Gemma, context: &str, choice: &str) -> gemma::Result<(Request, usize)> {
    let (ctx, cont) = encode_pair(g, context, choice)?;
    let mut prompt = vec![g.tokenizer.bos_id];
    prompt.extend(&ctx);
    prompt.extend(&cont);
    let mut req = Request::new(prompt, 0, g.stop_ids());
    req.prompt_logprobs_from = Some(1 + ctx.len());
    Ok((req, cont.len()))
}

/// Index of the largest value (the first on ties, as numpy's argmax).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Wait for a request's end: the prompt scores and the text.
fn finish(mut h: Handle) -> Result<(Vec<gemma::PromptLogprob>, String), String> {
    let (mut prompt, mut text) = (Vec::new(), String::new());
    while let Some(ev) = h.events.blocking_recv() {
        match ev {
            Event::Prompt(p) => prompt = p,
            Event::Token(t) => text.push_str(&t.text),
            Event::Done(s) => {
                text.push_str(&s.tail_text);
                return Ok((prompt, text));
            }
            Event::Error(e) => return Err(e),
        }
    }
    Err("the engine stopped before the item finished".into())
}

/// Score `items` through `engine`, all queued at once so the engine batches
/// them; `progress(done, total)` follows the items.
pub fn evaluate(engine: &Engine, items: &[(usize, TaskItem)], progress: &mut dyn FnMut(usize, usize)) -> Result<EvalReport, EvalError> {
    let g = engine.gemma();
    let engine_err = |line: usize| move |e: SubmitError| EvalError::Engine { line, message: e.to_string() };
    // Submit everything first (the queue must hold it), then collect in order.
    let mut pending = Vec::with_capacity(items.len());
    for (line, item) in items {
        let line = *line;
        let model_err = |e: gemma::GemmaError| EvalError::Engine { line, message: e.to_string() };
        match item {
            TaskItem::Choice(c) => {
                let mut hs = Vec::with_capacity(c.choices.len());
                for choice in &c.choices {
                    let (req, n) = choice_request(g, &c.context, choice).map_err(model_err)?;
                    let seen = (req.prompt.clone(), req.prompt_logprobs_from.unwrap_or(0));
                    hs.push((engine.submit(req).map_err(engine_err(line))?, n, Some(seen)));
                }
                pending.push((line, item, hs));
            }
            TaskItem::Generate(x) => {
                let prompt = g.encode_prompt(&x.prompt).map_err(model_err)?;
                let room = engine.config().max_total_tokens.min(g.model.config.max_position_embeddings).saturating_sub(prompt.len());
                let mut req = Request::new(prompt, MAX_GEN_TOKENS.min(room).max(1), g.stop_ids());
                req.stop_strings = x.until.clone();
                pending.push((line, item, vec![(engine.submit(req).map_err(engine_err(line))?, 0, None)]));
            }
        }
    }
    let total = pending.len();
    let mut report = EvalReport { n: total, ..EvalReport::default() };
    let (mut right, mut right_norm, mut matched) = (0usize, 0usize, 0usize);
    for (done, (line, item, hs)) in pending.into_iter().enumerate() {
        let failed = |message: String| EvalError::Engine { line, message };
        match item {
            TaskItem::Choice(c) => {
                let mut sums = Vec::with_capacity(hs.len());
                let mut scored = Vec::with_capacity(hs.len());
                for (h, n, seen) in hs {
                    scored.extend(seen);
                    let (scores, _) = finish(h).map_err(failed)?;
                    if scores.len() != n {
                        return Err(failed(format!("expected {n} scored tokens, got {}", scores.len())));
                    }
                    sums.push(scores.iter().map(|s| s.logprob.unwrap_or(f32::NEG_INFINITY) as f64).sum::<f64>());
                }
                let norm: Vec<f64> = sums.iter().zip(&c.choices).map(|(s, ch)| s / ch.chars().count() as f64).collect();
                let (correct, correct_norm) = (argmax(&sums) == c.answer, argmax(&norm) == c.answer);
                right += usize::from(correct);
                right_norm += usize::from(correct_norm);
                report.n_choice += 1;
                report.items.push(ItemResult::Choice { line, loglikelihoods: sums, scored, correct, correct_norm });
            }
            TaskItem::Generate(x) => {
                let Some((h, _, _)) = hs.into_iter().next() else { continue };
                let (_, text) = finish(h).map_err(failed)?;
                let correct = text.trim() == x.target.trim();
                matched += usize::from(correct);
                report.n_generate += 1;
                report.items.push(ItemResult::Generate { line, text, correct });
            }
        }
        progress(done + 1, total);
    }
    let frac = |k: usize, n: usize| (n > 0).then(|| k as f64 / n as f64);
    report.acc = frac(right, report.n_choice);
    report.acc_norm = frac(right_norm, report.n_choice);
    report.exact_match = frac(matched, report.n_generate);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lines_parse_and_bad_lines_name_their_number() {
        let ok = "{\"context\": \"Q: 2+2?\\nA:\", \"choices\": [\" 4\", \" 5\"], \"answer\": 0}\n\n{\"prompt\": \"1, 2,\", \"target\": \"3\", \"until\": [\",\"]}\n";
        let items = parse_task(ok, "t.jsonl").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].0, 3);
        assert!(matches!(items[1].1, TaskItem::Generate(_)));
        for (bad, needle) in [
            ("{\"context\": \"a\", \"choices\": [\"b\"], \"answer\": 1}", "line 1: 'answer' is 1"),
            ("{\"context\": \"a\", \"choices\": [], \"answer\": 0}", "line 1: 'choices' is empty"),
            ("{\"context\": \"a\", \"choices\": \"b\", \"answer\": 0}", "line 1: a multiple-choice item"),
            ("\n[1, 2]", "line 2: must be a JSON object"),
            ("{\"context\": \"a\"", "line 1: not valid JSON"),
            ("{\"question\": \"a\"}", "line 1: neither"),
            ("{\"prompt\": \"a\", \"target\": \"b\", \"until\": [\"\"]}", "line 1: 'until' holds an empty string"),
            ("{\"prompt\": \"a\", \"target\": 3}", "line 1: a generation item"),
        ] {
            let e = parse_task(bad, "t.jsonl").unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
        assert!(parse_task("\n\n", "t.jsonl").unwrap_err().to_string().contains("no task items"));
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
