//! Chat templates: the model's own Jinja template rendered with Hugging Face
//! semantics (`messages`, `add_generation_prompt`, `bos_token`,
//! `raise_exception`, trim_blocks + lstrip_blocks), or Gemma's built-in one.

use gemma_core::{GemmaError, Result};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// One chat message. Roles: `system`, `user`, `assistant` (or `model`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: String,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// Gemma's chat format as a Jinja template, used when a model ships none:
/// `<bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n`,
/// roles strictly alternating, a system message folded into the first user
/// turn followed by a blank line.
pub const GEMMA_CHAT_TEMPLATE: &str = concat!(
    "{{ bos_token }}",
    "{%- if messages[0]['role'] == 'system' -%}",
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}",
    "{%- set loop_messages = messages[1:] -%}",
    "{%- else -%}",
    "{%- set first_user_prefix = '' -%}",
    "{%- set loop_messages = messages -%}",
    "{%- endif -%}",
    "{%- for message in loop_messages -%}",
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}",
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
    "{%- endif -%}",
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}",
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}",
);

/// Most instructions one rendering may run (real templates use a few thousand per message).
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// True when this is the built-in Gemma template (the model shipped none).
    pub builtin: bool,
    /// The Jinja source.
    pub source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("builtin", &self.builtin).finish()
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compile a Jinja chat template.
    pub fn new(source: &str) -> Result<Self> {
        Self::compile(source.to_string(), false)
    }

    /// The built-in Gemma template.
    pub fn gemma() -> Self {
        Self::compile(GEMMA_CHAT_TEMPLATE.to_string(), true).expect("built-in template compiles")
    }

    fn compile(source: String, builtin: bool) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        // A template comes with the model: bound its work (a loop over
        // range(10**9) is an error, not a hung request).
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_template_owned("chat", source.clone()).map_err(|e| GemmaError::Template(format!("cannot parse: {e}")))?;
        Ok(Self { env, builtin, source })
    }

    /// Render a conversation. `add_generation_prompt` appends the opening of
    /// the model's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool, bos_token: &str, eos_token: &str) -> Result<String> {
        if messages.is_empty() {
            return Err(GemmaError::invalid("messages", "a conversation needs at least one message"));
        }
        self.render_values(minijinja::Value::from_serialize(messages), None, add_generation_prompt, bos_token, eos_token)
    }

    /// Whether the template reads a `tools` variable (Hugging Face tool-use
    /// templates: the declarations are the template's to write).
    pub fn takes_tools(&self) -> bool {
        self.takes("tools")
    }

    /// Whether the template reads the variable `name` (e.g. `enable_thinking`).
    pub fn takes(&self, name: &str) -> bool {
        self.env.get_template("chat").is_ok_and(|t| t.undeclared_variables(false).contains(name))
    }

    /// Whether the template text mentions `needle` (e.g. a control token it writes).
    pub fn mentions(&self, needle: &str) -> bool {
        self.source.contains(needle)
    }

    /// Render Hugging Face-shaped messages (JSON objects with `role`,
    /// `content` and, for tool use, `tool_calls` with `function.arguments`
    /// as an object, and `tool` messages with `name`), and `tools` (a list
    /// of `{"type": "function", "function": {...}}`) as
    /// `apply_chat_template(messages, tools=…)` does.
    pub fn render_json(&self, messages: &serde_json::Value, tools: Option<&serde_json::Value>, add_generation_prompt: bool, bos_token: &str, eos_token: &str) -> Result<String> {
        self.render_json_kwargs(messages, tools, add_generation_prompt, bos_token, eos_token, &serde_json::Map::new())
    }

    /// [`ChatTemplate::render_json`] with extra template variables, as
    /// `apply_chat_template(…, **kwargs)` passes them (`enable_thinking`,
    /// vLLM's `chat_template_kwargs`); they cannot replace `messages`,
    /// `tools`, `add_generation_prompt` or the special tokens.
    pub fn render_json_kwargs(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        if messages.as_array().is_none_or(|m| m.is_empty()) {
            return Err(GemmaError::invalid("messages", "a conversation needs at least one message"));
        }
        let mut ctx: std::collections::BTreeMap<String, minijinja::Value> =
            kwargs.iter().map(|(k, v)| (k.clone(), minijinja::Value::from_serialize(v))).collect();
        let tools = tools.map(minijinja::Value::from_serialize);
        ctx.extend(Self::fixed(minijinja::Value::from_serialize(messages), tools, add_generation_prompt, bos_token, eos_token));
        self.render_ctx(ctx)
    }

    /// The variables every rendering gets.
    fn fixed(messages: minijinja::Value, tools: Option<minijinja::Value>, add_generation_prompt: bool, bos_token: &str, eos_token: &str) -> [(String, minijinja::Value); 5] {
        [
            ("messages".into(), messages),
            ("tools".into(), minijinja::Value::from(tools)),
            ("add_generation_prompt".into(), minijinja::Value::from(add_generation_prompt)),
            ("bos_token".into(), minijinja::Value::from(bos_token)),
            ("eos_token".into(), minijinja::Value::from(eos_token)),
        ]
    }

    fn render_values(&self, messages: minijinja::Value, tools: Option<minijinja::Value>, add_generation_prompt: bool, bos_token: &str, eos_token: &str) -> Result<String> {
        self.render_ctx(Self::fixed(messages, tools, add_generation_prompt, bos_token, eos_token).into_iter().collect())
    }

    fn render_ctx(&self, ctx: std::collections::BTreeMap<String, minijinja::Value>) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| GemmaError::Template(e.to_string()))?;
        tmpl.render(ctx)
        .map_err(|e| {
            let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.to_string());
            GemmaError::Template(detail)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_renders_gemma_format() {
        let t = ChatTemplate::gemma();
        let s = t.render(&[ChatMessage::new("user", "Hi")], true, "<bos>", "<eos>").unwrap();
        assert_eq!(s, "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
    }

    #[test]
    fn builtin_rejects_non_alternating_roles() {
        let t = ChatTemplate::gemma();
        let m = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        let err = t.render(&m, true, "<bos>", "<eos>").unwrap_err().to_string();
        assert!(err.contains("alternate"), "{err}");
    }

    #[test]
    fn tools_variable_is_detected_and_rendered() {
        assert!(!ChatTemplate::gemma().takes_tools());
        let t = ChatTemplate::new("{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments.city }}{% endif %};{% endfor %}").unwrap();
        assert!(t.takes_tools());
        let msgs = serde_json::json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {"city": "Paris"}}}]}]);
        let tools = serde_json::json!([{"type": "function", "function": {"name": "w"}}]);
        assert_eq!(t.render_json(&msgs, Some(&tools), false, "", "").unwrap(), "[w]user:hi;assistant:Paris;");
    }

    #[test]
    fn runaway_templates_stop_with_an_error() {
        let t = ChatTemplate::new("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}").unwrap();
        let e = t.render(&[ChatMessage::new("user", "x")], false, "", "").unwrap_err().to_string();
        assert!(e.contains("fuel"), "{e}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0]['content'].strip() }}").unwrap();
        let s = t.render(&[ChatMessage::new("user", "  x  ")], false, "", "").unwrap();
        assert_eq!(s, "x");
    }
}
