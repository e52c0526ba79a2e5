//! The chat-template renderer: the input's first line is the template, the
//! rest the messages' text; compile, render (with and without tools),
//! bounded by the template fuel.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (src, text) = s.split_once('\n').unwrap_or((s, "hi"));
    let Ok(t) = gemma_tokenizer::ChatTemplate::new(src) else { return };
    let msgs = [gemma_tokenizer::ChatMessage::new("system", text), gemma_tokenizer::ChatMessage::new("user", text)];
    let _ = t.render(&msgs, true, "<bos>", "<eos>");
    let json = serde_json::json!([{"role": "user", "content": text}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": text, "arguments": {"a": 1}}}]}]);
    let tools = serde_json::json!([{"type": "function", "function": {"name": text, "parameters": {"type": "object"}}}]);
    let _ = t.render_json(&json, Some(&tools), true, "<bos>", "<eos>");
    let _ = t.takes_tools();
});
