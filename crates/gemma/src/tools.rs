//! Tool calling on `/v1/chat/completions`: OpenAI `tools`, `tool_choice`
//! (`none | auto | required | {"type": "function", "function": {"name"}}`)
//! and `parallel_tool_calls`, in the model's own convention:
//! - the declarations: the chat template writes them when it takes a
//!   `tools` variable (Hugging Face tool-use templates); otherwise we do;
//! - the calls: with FunctionGemma's or Gemma 4's control tokens when the
//!   tokenizer has them (`call_syntax.rs`), else Gemma 3's documented JSON
//!   convention (`{"name": …, "parameters": {…}}`).
//!
//! Assistant `tool_calls` and `role: "tool"` messages are rendered back as
//! the turns the model would have seen.
//!
//! The output is constrained: with `required` or a named function from the
//! first token to a call of the tools' schemas; with `auto` to either text
//! (not starting with `{` or `[`) or such a call, so once a call starts it
//! follows the schema, and plain text stays plain (`auto` never forces a
//! call).

use crate::call_syntax::CallSyntax;
use crate::{ChatMessage, Gemma, Grammar};
use serde_json::{json, Value};

/// One function the model may call.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// What it does (for the model).
    pub description: String,
    /// JSON schema of its arguments.
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// No call: the tools are not offered.
    None,
    /// A call or text, as the model likes.
    Auto,
    /// A call of any of the tools.
    Required,
    /// A call of this function.
    Named(String),
}

/// The tools of one request.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The functions offered.
    pub tools: Vec<Tool>,
    /// `tool_choice`.
    pub choice: ToolChoice,
    /// `parallel_tool_calls`: several calls at once.
    pub parallel: bool,
    /// Control-token calls (None: Gemma 3's JSON calls).
    pub syntax: Option<&'static CallSyntax>,
}

/// A parsed call: the function and its arguments as a JSON string.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The function called.
    pub name: String,
    /// Its arguments, JSON text.
    pub arguments: String,
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a request (None
/// without tools), calls written in `syntax` (None: JSON calls).
pub fn parse(v: &Value, syntax: Option<&'static CallSyntax>) -> Result<Option<Tools>, String> {
    let list = match v.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("'tools' must be an array".into()),
    };
    let mut tools = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(format!("tools[{i}]: only {{\"type\": \"function\"}} tools are supported"));
        }
        let f = t.get("function").filter(|f| f.is_object()).ok_or(format!("tools[{i}] needs a 'function' object"))?;
        let name = f.get("name").and_then(Value::as_str).ok_or(format!("tools[{i}].function needs a 'name'"))?;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("tools[{i}].function.name '{name}' must be 1 to 64 letters, digits, '_' or '-'"));
        }
        if tools.iter().any(|t: &Tool| t.name == name) {
            return Err(format!("tools: the function name '{name}' appears twice"));
        }
        let parameters = f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if !parameters.is_object() {
            return Err(format!("tools[{i}].function.parameters must be a JSON schema object"));
        }
        let description = f.get("description").and_then(Value::as_str).unwrap_or("").to_string();
        tools.push(Tool { name: name.to_string(), description, parameters });
    }
    let choice = match v.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => return Err(format!("tool_choice '{other}' is not one of none, auto, required")),
        },
        Some(o) => {
            let name = o.pointer("/function/name").and_then(Value::as_str).ok_or("tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}")?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(format!("tool_choice names '{name}', which is not among the tools ({})", tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")));
            }
            ToolChoice::Named(name.to_string())
        }
    };
    let parallel = v.get("parallel_tool_calls").and_then(Value::as_bool).unwrap_or(true);
    Ok(Some(Tools { tools, choice, parallel, syntax }))
}

impl Tools {
    /// Whether the model sees the tools and may call them.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The tools the model may call now.
    fn callable(&self) -> Vec<&Tool> {
        match &self.choice {
            ToolChoice::Named(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            _ => self.tools.iter().collect(),
        }
    }

    /// The JSON schema of one call (any callable tool) or, with parallel
    /// calls, of a list of them; compact (no whitespace).
    fn call_schema(&self) -> Value {
        let one: Vec<Value> = self
            .callable()
            .iter()
            .map(|t| json!({"type": "object", "properties": {"name": {"const": t.name}, "parameters": t.parameters}, "required": ["name", "parameters"], "additionalProperties": false}))
            .collect();
        let call = if one.len() == 1 { one[0].clone() } else { json!({"anyOf": one}) };
        let schema = if self.parallel && !matches!(self.choice, ToolChoice::Named(_)) {
            json!({"anyOf": [call, {"type": "array", "items": call, "minItems": 1}]})
        } else {
            call
        };
        // Calls are read by programs: compact JSON, no whitespace to wander in.
        crate::json_without_whitespace(schema)
    }

    /// The constraint of the answer (None for `none`).
    pub fn grammar(&self) -> Option<Grammar> {
        if let Some(syn) = self.syntax {
            let parallel = self.parallel && !matches!(self.choice, ToolChoice::Named(_));
            let calls = syn.calls_lark(&self.callable(), parallel);
            return match self.choice {
                ToolChoice::None => None,
                ToolChoice::Required | ToolChoice::Named(_) => Some(Grammar::Lark(format!("start: calls\n{calls}"))),
                // Text (which never holds the call token) or calls.
                ToolChoice::Auto => Some(Grammar::Lark(format!("start: TEXT | calls\nTEXT: /[^\\x00]+/\n{calls}"))),
            };
        }
        match self.choice {
            ToolChoice::None => None,
            ToolChoice::Required | ToolChoice::Named(_) => Some(Grammar::JsonSchema(self.call_schema())),
            ToolChoice::Auto => {
                // Text that does not open a call, or a call.
                let schema = self.call_schema().to_string();
                Some(Grammar::Lark(format!("start: text | call\ntext: /[^\\[{{ \\t\\n][\\s\\S]*/\ncall: %json {schema}\n")))
            }
        }
    }

    /// The tool declarations for the prompt, in Gemma 3's convention (one
    /// JSON declaration per line).
    pub fn prompt_block(&self) -> String {
        if let Some(syn) = self.syntax {
            let decls: String = self.callable().iter().map(|t| syn.write_declaration(t)).collect();
            return format!("{decls}\n");
        }
        let decls: Vec<String> = self
            .callable()
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parameters": t.parameters});
                if !t.description.is_empty() {
                    d["description"] = json!(t.description);
                }
                d.to_string()
            })
            .collect();
        let when = if self.choice == ToolChoice::Auto { "To call a function, reply" } else { "Call a function: reply" };
        let list = if self.parallel { " (or a JSON list of them)" } else { "" };
        format!("You have these functions. {when} with only {{\"name\": NAME, \"parameters\": {{ARGUMENTS}}}}{list}.\n{}\n\n", decls.join("\n"))
    }

    /// The calls in a finished answer, if it is one.
    pub fn parse_calls(&self, text: &str) -> Option<Vec<Call>> {
        if !self.active() {
            return None;
        }
        if let Some(syn) = self.syntax {
            return syn.parse(text, &self.tools);
        }
        let v: Value = serde_json::from_str(text.trim()).ok()?;
        let items = match v {
            Value::Array(a) => a,
            o @ Value::Object(_) => vec![o],
            _ => return None,
        };
        items
            .iter()
            .map(|c| {
                let name = c.get("name")?.as_str()?;
                self.tools.iter().find(|t| t.name == name)?;
                let args = c.get("parameters").or_else(|| c.get("arguments")).cloned().unwrap_or_else(|| json!({}));
                Some(Call { name: name.to_string(), arguments: args.to_string() })
            })
            .collect::<Option<Vec<_>>>()
            .filter(|c| !c.is_empty())
    }

    /// Whether streamed text so far may be the start of a call (held back
    /// until the answer ends).
    pub fn may_be_call(&self, text_so_far: &str) -> bool {
        if let Some(syn) = self.syntax {
            return self.active() && text_so_far.trim_start().starts_with(syn.open);
        }
        self.active() && matches!(text_so_far.trim_start().chars().next(), Some('{' | '['))
    }
}

/// The OpenAI `tool_calls` of `calls`, ids `call_<req>_<i>`.
pub fn tool_calls_json(calls: &[Call], req_id: u64) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"id": format!("call_{req_id}_{i}"), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}

/// `s` in pieces of about `n` bytes, cut at character boundaries.
pub fn fragments(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + n).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[start..end]);
        start = end;
    }
    out
}

/// The conversation as chat-template messages: assistant `tool_calls` as
/// the call JSON the model writes, `tool` results as a user turn naming the
/// function (`tool_call_id` must match an earlier call), consecutive turns
/// of one role merged (Gemma's template alternates roles), and the tool
/// declarations before the first user text.
pub fn messages(raw: &[Value], tools: Option<&Tools>, content_text: &dyn Fn(&Value) -> Result<String, String>) -> Result<Vec<ChatMessage>, String> {
    let mut calls: Vec<(String, String)> = Vec::new(); // (id, name)
    let mut out: Vec<ChatMessage> = Vec::new();
    for m in raw {
        let role = m.get("role").and_then(Value::as_str).ok_or("every message needs a 'role'")?;
        let (role, content) = match role {
            "system" | "developer" | "user" => {
                let c = m.get("content").filter(|c| !c.is_null()).ok_or(format!("a '{role}' message needs 'content' (a string or text parts)"))?;
                (if role == "user" { "user" } else { "system" }, content_text(c)?)
            }
            "assistant" => {
                let mut text = match m.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => content_text(c)?,
                };
                if let Some(tc) = m.get("tool_calls").and_then(Value::as_array).filter(|a| !a.is_empty()) {
                    let parsed = assistant_calls(tc, &mut calls)?;
                    let written: Vec<Value> = parsed.iter().map(|(_, name, params)| json!({"name": name, "parameters": params})).collect();
                    let call = match tools.and_then(|t| t.syntax) {
                        Some(syn) => parsed.iter().map(|(_, name, params)| syn.write_call(name, params)).collect(),
                        None if written.len() == 1 => written[0].to_string(),
                        None => Value::Array(written).to_string(),
                    };
                    text = if text.is_empty() { call } else { format!("{text}\n{call}") };
                } else if m.get("content").is_none_or(Value::is_null) {
                    return Err("an 'assistant' message needs 'content' or 'tool_calls'".into());
                }
                ("assistant", text)
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or("a 'tool' message needs 'tool_call_id'")?;
                let name = calls.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone()).ok_or(format!("the 'tool' message answers '{id}', which no earlier assistant message called"))?;
                let c = m.get("content").filter(|c| !c.is_null()).map(content_text).transpose()?.unwrap_or_default();
                match tools.and_then(|t| t.syntax) {
                    Some(syn) => ("user", syn.write_response(&name, &c)),
                    None => ("user", format!("Result of {name}: {c}")),
                }
            }
            other => return Err(format!("unsupported message role '{other}'")),
        };
        match out.last_mut() {
            Some(last) if last.role == role && role != "system" => {
                last.content.push_str("\n\n");
                last.content.push_str(&content);
            }
            _ => out.push(ChatMessage { role: role.to_string(), content }),
        }
    }
    if let Some(t) = tools.filter(|t| t.active()) {
        let block = t.prompt_block();
        match out.iter_mut().find(|m| m.role == "user") {
            Some(u) => u.content.insert_str(0, &block),
            None => out.push(ChatMessage { role: "user".into(), content: block }),
        }
    }
    Ok(out)
}

/// An assistant message's `tool_calls` as `(id, name, arguments)`, each
/// remembered in `calls` (`(id, name)`) for the results that answer them.
fn assistant_calls(tc: &[Value], calls: &mut Vec<(String, String)>) -> Result<Vec<(String, String, Value)>, String> {
    tc.iter()
        .map(|c| {
            let id = c.get("id").and_then(Value::as_str).ok_or("an assistant tool call needs an 'id'")?;
            let name = c.pointer("/function/name").and_then(Value::as_str).ok_or("an assistant tool call needs 'function.name'")?;
            // OpenAI sends a JSON string; some clients (Ollama's) an object.
            let args: Value = match c.pointer("/function/arguments") {
                None | Some(Value::Null) => Value::Object(Default::default()),
                Some(Value::String(a)) => serde_json::from_str(a).map_err(|e| format!("tool call '{id}': 'arguments' is not JSON: {e}"))?,
                Some(o @ Value::Object(_)) => o.clone(),
                Some(other) => return Err(format!("tool call '{id}': 'arguments' must be a JSON string or an object, got {other}")),
            };
            calls.push((id.to_string(), name.to_string()));
            Ok((id.to_string(), name.to_string(), args))
        })
        .collect()
}

/// The prompt text of a chat request (encode it with BOS added only if
/// missing): through the template's own `tools` variable when it has one
/// and tools are active (Hugging Face-shaped messages), else [`messages`]
/// rendered by the template.
pub fn prompt_text(
    g: &Gemma,
    raw: &[Value],
    tools: Option<&Tools>,
    content_text: &dyn Fn(&Value) -> Result<String, String>,
    kwargs: &serde_json::Map<String, Value>,
) -> Result<String, String> {
    let Some(t) = tools.filter(|t| t.active() && g.tokenizer.chat_template.takes_tools()) else {
        let m = messages(raw, tools, content_text)?;
        if kwargs.is_empty() {
            return g.tokenizer.apply_chat_template(&m, true).map_err(|e| e.to_string());
        }
        // Template variables (thinking): the Hugging Face-shaped path, with
        // each assistant turn's `reasoning_content` for the template to use or drop.
        let mut list = serde_json::to_value(&m).map_err(|e| e.to_string())?;
        if let (Some(out), true) = (list.as_array_mut(), m.len() == raw.len()) {
            for (o, r) in out.iter_mut().zip(raw) {
                if let Some(rc) = r.get("reasoning_content").filter(|v| v.is_string()) {
                    o["reasoning_content"] = rc.clone();
                }
            }
        }
        return g.tokenizer.apply_chat_template_kwargs(&list, None, true, kwargs).map_err(|e| e.to_string());
    };
    let (msgs, decls) = hf_messages(raw, t, content_text)?;
    g.tokenizer.apply_chat_template_kwargs(&msgs, Some(&decls), true, kwargs).map_err(|e| e.to_string())
}

/// Messages and tools as `apply_chat_template(messages, tools=…)` takes
/// them: call arguments as objects, `tool` messages with the function's
/// `name`, text parts joined; the callable tools.
fn hf_messages(raw: &[Value], t: &Tools, content_text: &dyn Fn(&Value) -> Result<String, String>) -> Result<(Value, Value), String> {
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for m in raw {
        let role = m.get("role").and_then(Value::as_str).ok_or("every message needs a 'role'")?;
        let content = match m.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(c) => content_text(c)?,
        };
        let mut o = json!({"role": role, "content": content});
        match role {
            "system" | "developer" | "user" => {}
            "assistant" => {
                if let Some(rc) = m.get("reasoning_content").filter(|v| v.is_string()) {
                    o["reasoning_content"] = rc.clone();
                }
                if let Some(tc) = m.get("tool_calls").and_then(Value::as_array).filter(|a| !a.is_empty()) {
                    let list = assistant_calls(tc, &mut calls)?;
                    o["tool_calls"] = list.into_iter().map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})).collect();
                } else if m.get("content").is_none_or(Value::is_null) {
                    return Err("an 'assistant' message needs 'content' or 'tool_calls'".into());
                }
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or("a 'tool' message needs 'tool_call_id'")?;
                let name = calls.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone()).ok_or(format!("the 'tool' message answers '{id}', which no earlier assistant message called"))?;
                o["tool_call_id"] = json!(id);
                o["name"] = json!(name);
            }
            other => return Err(format!("unsupported message role '{other}'")),
        }
        out.push(o);
    }
    let decls = t
        .callable()
        .iter()
        .map(|d| json!({"type": "function", "function": {"name": d.name, "description": d.description, "parameters": d.parameters}}))
        .collect();
    Ok((Value::Array(out), Value::Array(decls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!({"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]})
    }

    #[test]
    fn parse_choices_and_errors() {
        let mut v = weather();
        assert_eq!(parse(&v, None).unwrap().unwrap().choice, ToolChoice::Auto);
        v["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(parse(&v, None).unwrap().unwrap().choice, ToolChoice::Named("get_weather".into()));
        v["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
        assert!(parse(&v, None).unwrap_err().contains("'nope'"));
        v["tool_choice"] = json!("sometimes");
        assert!(parse(&v, None).unwrap_err().contains("sometimes"));
        assert!(parse(&json!({"tools": [{"type": "code_interpreter"}]}), None).is_err());
        assert!(parse(&json!({"tools": []}), None).unwrap().is_none());
    }

    #[test]
    fn calls_parse_and_messages_render() {
        let t = parse(&weather(), None).unwrap().unwrap();
        assert_eq!(t.parse_calls(r#" {"name": "get_weather", "parameters": {"city": "Paris"}}"#), Some(vec![Call { name: "get_weather".into(), arguments: r#"{"city":"Paris"}"#.into() }]));
        assert_eq!(t.parse_calls("Paris is sunny."), None);
        assert_eq!(t.parse_calls(r#"{"name": "other", "parameters": {}}"#), None);
        let raw = vec![
            json!({"role": "user", "content": "Weather in Paris?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"}),
        ];
        let text = |c: &Value| c.as_str().map(String::from).ok_or_else(|| "text".to_string());
        let m = messages(&raw, Some(&t), &text).unwrap();
        assert_eq!(m.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["user", "assistant", "user"]);
        assert!(m[0].content.starts_with("You have these functions") && m[0].content.ends_with("Weather in Paris?"));
        assert_eq!(m[1].content, r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#);
        assert_eq!(m[2].content, "Result of get_weather: sunny, 21 C");
        let bad = vec![json!({"role": "user", "content": "x"}), json!({"role": "tool", "tool_call_id": "zz", "content": "r"})];
        assert!(messages(&bad, Some(&t), &text).unwrap_err().contains("'zz'"));
    }
}
