//! Gemma 4 thinking mode through the OpenAI chat route, on
//! testdata/tiny-gemma4-it: its greedy answer to the fixture prompt opens
//! and closes a thought (tools/reference/make_tiny_gemma4_it.py), so the
//! split is checked on a real generation, plain and streamed.

mod common;
use common::*;
use gemma_engine::EngineConfig;
use gemma_server::ServerConfig;
use serde_json::{json, Value};

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(testdata("tiny-gemma4-it").join("thinking.json")).unwrap()).unwrap()
}

fn server(default_on: bool) -> Server {
    start_with(testdata("tiny-gemma4-it"), EngineConfig::default(), ServerConfig { model_id: "tiny".into(), enable_thinking: default_on, ..ServerConfig::default() })
}

#[test]
fn thought_comes_back_as_reasoning_content() {
    let f = fixture();
    let s = server(false);
    let body = json!({"messages": f["messages"], "max_tokens": f["max_tokens"], "temperature": 0, "reasoning_effort": "high"});
    let r = post(s.addr, "/v1/chat/completions", body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    // The prompt is the published template's with thinking on.
    assert_eq!(v["usage"]["prompt_tokens"], json!(f["prompt_ids"].as_array().unwrap().len()));
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], f["reasoning_content"], "{m}");
    assert_eq!(m["content"], f["content"], "{m}");
    assert!(!m["content"].as_str().unwrap().contains("<|channel>"));

    // Streamed: reasoning deltas first, then content deltas; the same text.
    let mut b = body;
    b["stream"] = json!(true);
    let r = post(s.addr, "/v1/chat/completions", b);
    let (mut reasoning, mut content, mut order) = (String::new(), String::new(), Vec::new());
    for e in r.events().iter().filter(|e| *e != "[DONE]") {
        let c: Value = serde_json::from_str(e).unwrap();
        let d = &c["choices"][0]["delta"];
        if let Some(t) = d["reasoning_content"].as_str() {
            reasoning.push_str(t);
            order.push('r');
        }
        if let Some(t) = d["content"].as_str().filter(|t| !t.is_empty()) {
            content.push_str(t);
            order.push('c');
        }
    }
    assert_eq!(reasoning, f["reasoning_content"].as_str().unwrap());
    assert_eq!(content, f["content"].as_str().unwrap());
    assert!(order.iter().collect::<String>().trim_start_matches('r').chars().all(|c| c == 'c'), "{order:?}");
}

#[test]
fn thinking_is_off_by_default_and_the_server_flag_turns_it_on() {
    let f = fixture();
    let prompt_len = f["prompt_ids"].as_array().unwrap().len();
    let ask = |s: &Server, extra: Value| {
        let mut body = json!({"messages": f["messages"], "max_tokens": 4, "temperature": 0});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post(s.addr, "/v1/chat/completions", body)
    };
    let off = server(false);
    let r = ask(&off, json!({})).json();
    // Without `<|think|>` in a system turn the prompt is shorter.
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() < prompt_len as u64, "{r}");
    assert!(r["choices"][0]["message"].get("reasoning_content").is_none_or(Value::is_null));
    let on = server(true);
    assert_eq!(ask(&on, json!({})).json()["usage"]["prompt_tokens"], json!(prompt_len));
    // A request turns it off again, by either field.
    for extra in [json!({"reasoning_effort": "none"}), json!({"chat_template_kwargs": {"enable_thinking": false}})] {
        assert!(ask(&on, extra).json()["usage"]["prompt_tokens"].as_u64().unwrap() < prompt_len as u64);
    }
    // Bad values and impossible combinations are named.
    let r = ask(&on, json!({"reasoning_effort": "max"}));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("reasoning_effort"), "{}", r.body);
    let r = ask(&off, json!({"reasoning_effort": "high", "response_format": {"type": "json_object"}}));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("thinking"), "{}", r.body);
    // With a grammar and the server default on, the answer simply does not think.
    let r = ask(&on, json!({"response_format": {"type": "json_object"}}));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn earlier_thoughts_are_stripped_from_the_next_prompt() {
    let s = server(true);
    let history = |answer: &str, reasoning: Option<&str>| {
        let mut a = json!({"role": "assistant", "content": answer});
        if let Some(r) = reasoning {
            a["reasoning_content"] = json!(r);
        }
        json!({"messages": [{"role": "user", "content": "2+2?"}, a, {"role": "user", "content": "3+3?"}], "max_tokens": 1, "temperature": 0})
    };
    let plain = post(s.addr, "/v1/chat/completions", history("4", None)).json()["usage"]["prompt_tokens"].clone();
    // The thought sent back (as reasoning_content, or inside content) does not reach the prompt.
    let with_field = post(s.addr, "/v1/chat/completions", history("4", Some("a long chain of reasoning here"))).json()["usage"]["prompt_tokens"].clone();
    let inline = post(s.addr, "/v1/chat/completions", history("<|channel>thought\na long chain of reasoning here<channel|>4", None)).json()["usage"]["prompt_tokens"].clone();
    assert_eq!(plain, with_field);
    assert_eq!(plain, inline);
}

#[test]
fn models_without_a_thinking_mode_refuse_it() {
    let s = start_with(testdata("tiny-gemma3"), EngineConfig::default(), ServerConfig { model_id: "tiny".into(), enable_thinking: true, ..ServerConfig::default() });
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "reasoning_effort": "low"}));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("no thinking mode"), "{}", r.body);
    // The server default does not make other models fail.
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
}

