//! Gemma 4 tool calls as Google's published chat templates write them
//! (testdata/templates/goldens_gemma4_tool_calls.json, rendered by
//! transformers' `apply_chat_template`; tools/reference/make_gemma4_tool_call_goldens.py)
//! read back into the same calls: whole (a finished answer) and token by
//! token through the tiny Gemma 4 tokenizer as the streaming path sees them
//! (held while it may be a call, parsed at the end).

use gemma::call_syntax::{CallSyntax, GEMMA4};
use gemma::tools::{self, Call, Tools};
use gemma::{GemmaTokenizer, TokenStreamDecoder};
use gemma_engine::TokenEvent;
use serde_json::{json, Value};
use std::path::Path;

fn goldens() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/templates/goldens_gemma4_tool_calls.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("goldens")).expect("goldens JSON")
}

fn tokenizer() -> GemmaTokenizer {
    GemmaTokenizer::from_folder(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma4-it")).expect("tiny-gemma4-it tokenizer")
}

/// Whether `calls` are the rendering's calls: same names in order,
/// arguments equal as JSON values.
fn same_calls(calls: &[Call], want: &[Value]) -> bool {
    calls.len() == want.len()
        && calls.iter().zip(want).all(|(c, w)| {
            c.name == w["name"] && serde_json::from_str::<Value>(&c.arguments).ok().as_ref() == Some(&w["arguments"])
        })
}

/// The calls the streaming path parses from `text` generated token by token.
fn streamed(tok: &GemmaTokenizer, t: &Tools, text: &str) -> Option<Vec<Call>> {
    let ids = tok.encode(text, false).expect("encode");
    assert_eq!(ids.first().copied(), tok.token_to_id(GEMMA4.open), "{text:?} starts with the call token");
    let mut dec = TokenStreamDecoder::new();
    let mut spelled = String::new();
    for id in ids {
        let text = dec.push(tok, id).expect("decode").unwrap_or_default();
        let ev = TokenEvent { id, text, special: tok.is_control(id), logprob: None, top: Vec::new() };
        spelled.push_str(&crate::openai::tool_text_of(tok, &ev));
        assert!(spelled.trim().is_empty() || t.may_be_call(&spelled), "released as plain text after {spelled:?}");
    }
    let tail = dec.flush(tok).expect("flush").unwrap_or_default();
    t.parse_calls(&(spelled + &tail))
}

#[test]
fn published_gemma4_templates_calls_parse_back() {
    let g = goldens();
    let tok = tokenizer();
    assert_eq!(CallSyntax::detect(&tok), Some(&GEMMA4), "tiny-gemma4-it has Gemma 4's call tokens");
    let t = tools::parse(&json!({"tools": g["tools"]}), Some(&GEMMA4)).expect("tools").expect("some tools");
    let renderings = g["renderings"].as_array().expect("renderings");
    assert!(renderings.len() >= 75, "{} renderings", renderings.len());
    let mut bad = Vec::new();
    for r in renderings {
        let (text, want) = (r["call_text"].as_str().expect("call_text"), r["calls"].as_array().expect("calls"));
        let label = format!("{}/{}", r["template"], r["case"]);
        match t.parse_calls(text) {
            Some(c) if same_calls(&c, want) => {}
            got => bad.push(format!("{label} whole: {got:?} from {text:?}")),
        }
        match streamed(&tok, &t, text) {
            Some(c) if same_calls(&c, want) => {}
            got => bad.push(format!("{label} streamed: {got:?} from {text:?}")),
        }
    }
    assert!(bad.is_empty(), "{} of {} renderings not read back:\n{}", bad.len(), renderings.len(), bad.join("\n"));
}
