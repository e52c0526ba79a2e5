//! `Gemma.create_chat_completion`: the messages rendered as `gemma serve`
//! renders them (`gemma::tools::prompt_text`), tool calls constrained and
//! parsed by the same code (`gemma::tools`), OpenAI-shaped dicts and chunks.

use crate::errors::to_py;
use crate::gemma_py::{finish_reason, fresh_seed, to_json, PyGemma, Run, Sampling};
use crate::stream::{Shape, TextStream};
use gemma::call_syntax::CallSyntax;
use gemma::tools::{ToolChoice, Tools};
use gemma::Grammar;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::{json, Value};

/// The tool keywords of a chat call, as given.
pub struct ToolArgs<'a, 'py> {
    /// OpenAI `tools` (a list of `{"type": "function", "function": {…}}`).
    pub tools: Option<&'a Bound<'py, PyAny>>,
    /// `"none" | "auto" | "required"` or `{"type": "function", "function": {"name"}}`.
    pub tool_choice: Option<&'a Bound<'py, PyAny>>,
    /// Whether several calls may come at once.
    pub parallel_tool_calls: Option<bool>,
}

/// A message's content as text: a string, or the text of its parts.
fn content_text(c: &Value) -> Result<String, String> {
    match c {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                (Some("text"), Some(t)) => Ok(t.to_string()),
                (kind, _) => Err(format!("content part of type {kind:?}: only text parts are taken here (images: gemma serve)")),
            })
            .collect(),
        other => Err(format!("message content must be a string or a list of parts, not {other}")),
    }
}

/// OpenAI's finish reason of an answer that is a call (as the server's).
fn call_finish(t: &Tools, fr: &str) -> &'static str {
    match (&t.choice, fr) {
        (_, "length") => "length",
        (ToolChoice::Named(_), _) => "stop",
        _ => "tool_calls",
    }
}

/// A Python object from JSON (through `json.loads`).
fn to_py_json(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(py.import("json")?.call_method1("loads", (v.to_string(),))?.unbind())
}

/// Run a chat completion on `g`: a dict, or a stream of chunks.
pub fn complete(g: &PyGemma, py: Python<'_>, messages: &Bound<'_, PyAny>, t: ToolArgs<'_, '_>, format: Option<Grammar>, stream: bool, mut s: Sampling) -> PyResult<Py<PyAny>> {
    let model = &g.gemma;
    let msgs = to_json(py, messages, "messages")?;
    let list = msgs.as_array().filter(|m| !m.is_empty()).ok_or_else(|| PyValueError::new_err("messages must be a non-empty list of {\"role\", \"content\"} dicts"))?;
    let mut req_json = json!({});
    if let Some(x) = t.tools.filter(|x| !x.is_none()) {
        req_json["tools"] = to_json(py, x, "tools")?;
    }
    if let Some(x) = t.tool_choice.filter(|x| !x.is_none()) {
        req_json["tool_choice"] = match x.downcast::<PyString>() {
            Ok(name) => Value::String(name.to_string()),
            Err(_) => to_json(py, x, "tool_choice")?,
        };
    }
    if let Some(p) = t.parallel_tool_calls {
        req_json["parallel_tool_calls"] = json!(p);
    }
    let tools = gemma::tools::parse(&req_json, CallSyntax::detect(&model.tokenizer)).map_err(PyValueError::new_err)?;
    let text = gemma::tools::prompt_text(model, list, tools.as_ref(), &content_text, &serde_json::Map::new()).map_err(PyValueError::new_err)?;
    let ids = model.tokenizer.encode(&text, model.tokenizer.add_bos).map_err(to_py)?;
    let tools = tools.filter(|t| t.active());
    s.grammar = match (format, tools.as_ref().and_then(|t| t.grammar())) {
        (Some(_), Some(_)) => return Err(PyValueError::new_err("response_format and tools cannot be used together")),
        (f, tg) => f.or(tg),
    };
    let req = g.request(ids, s)?;
    let Some(tools) = tools else {
        return match g.run(py, req, stream, Shape::ChatChunk)? {
            Run::Stream(st) => Ok(Py::new(py, st)?.into_any()),
            Run::Done { text, finish, prompt_tokens, completion_tokens, .. } => {
                let msg = json!({"role": "assistant", "content": text});
                completion(py, g, msg, finish_reason(&finish), prompt_tokens, completion_tokens)
            }
        };
    };
    // With tools the answer is known to be a call or text only at its end:
    // collected, then (stream=True) handed out as chunks.
    let Run::Done { text, spelled, finish, prompt_tokens, completion_tokens } = g.run(py, req, false, Shape::ChatChunk)? else {
        return Err(PyValueError::new_err("a collected run streamed"));
    };
    let id = fresh_seed() % 1_000_000_000;
    let (msg, fr) = match tools.parse_calls(&spelled) {
        Some(calls) => (json!({"role": "assistant", "content": null, "tool_calls": gemma::tools::tool_calls_json(&calls, id)}), call_finish(&tools, finish_reason(&finish))),
        None => (json!({"role": "assistant", "content": text}), finish_reason(&finish)),
    };
    if !stream {
        return completion(py, g, msg, fr, prompt_tokens, completion_tokens);
    }
    let mut delta = msg;
    if delta["content"].is_null() {
        delta.as_object_mut().map(|o| o.remove("content"));
    }
    let chunk = |delta: Value, finish: Value| json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "model": g.name(),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let chunks = [chunk(delta, Value::Null), chunk(json!({}), json!(fr))].iter().map(|c| to_py_json(py, c)).collect::<PyResult<Vec<_>>>()?;
    Ok(Py::new(py, TextStream::done(chunks, g.name())?)?.into_any())
}

/// The `chat.completion` dict of one answer.
fn completion(py: Python<'_>, g: &PyGemma, message: Value, finish: &str, prompt_tokens: usize, completion_tokens: usize) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item("id", format!("chatcmpl-{}", fresh_seed() % 1_000_000_000))?;
    d.set_item("object", "chat.completion")?;
    d.set_item("created", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))?;
    d.set_item("model", g.name())?;
    let choice = PyDict::new(py);
    choice.set_item("index", 0)?;
    choice.set_item("message", to_py_json(py, &message)?)?;
    choice.set_item("finish_reason", finish)?;
    d.set_item("choices", PyList::new(py, [choice])?)?;
    let usage = PyDict::new(py);
    usage.set_item("prompt_tokens", prompt_tokens)?;
    usage.set_item("completion_tokens", completion_tokens)?;
    usage.set_item("total_tokens", prompt_tokens + completion_tokens)?;
    d.set_item("usage", usage)?;
    Ok(d.into_any().unbind())
}
