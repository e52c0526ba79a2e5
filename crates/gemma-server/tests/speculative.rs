//! Speculative decoding over HTTP: OpenAI's Predicted Outputs
//! (`prediction`) and the server's prompt-lookup drafts leave every answer
//! as it is without them (streamed and not), report the drafted tokens in
//! `usage.completion_tokens_details` and `/metrics`; `"speculative": false`
//! opts a request out; a malformed prediction gets a 400 naming it.

mod common;

use common::*;
use gemma_engine::EngineConfig;
use gemma_server::ServerConfig;
use serde_json::{json, Value};

fn body(prompt: &str, extra: Value) -> Value {
    let mut b = json!({"prompt": prompt, "max_tokens": 24, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[test]
fn predictions_and_prompt_lookup_answer_as_plain_decoding() {
    let plain = start(EngineConfig::default(), ServerConfig::default());
    let cfg = ServerConfig { speculation: gemma::Speculation { mode: gemma::SpecMode::Ngram, draft_max: 6, prediction: Vec::new(), draft_model: None }, ..ServerConfig::default() };
    let spec = start(EngineConfig::default(), cfg);
    let prompt = "one two three four one two three four one two three four";
    let want = plain.addr;
    let r = post(want, "/v1/completions", body(prompt, json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    let want_text = r.json()["choices"][0]["text"].as_str().unwrap().to_string();
    // Prompt lookup (the server's default) and a prediction that is the answer itself.
    for (server, extra) in [(spec.addr, json!({})), (plain.addr, json!({"prediction": {"type": "content", "content": want_text}})), (spec.addr, json!({"prediction": {"type": "content", "content": [{"type": "text", "text": want_text}]}}))] {
        let r = post(server, "/v1/completions", body(prompt, extra.clone()));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["choices"][0]["text"], want_text.as_str(), "{extra}");
        let d = &v["usage"]["completion_tokens_details"];
        let (acc, rej) = (d["accepted_prediction_tokens"].as_u64().unwrap(), d["rejected_prediction_tokens"].as_u64().unwrap());
        assert!(acc > 0, "{extra}: nothing accepted: {d}");
        eprintln!("{extra}: {acc} accepted, {rej} rejected of {} tokens", v["usage"]["completion_tokens"]);
        if extra.get("prediction").is_some() {
            // (The answer's text tokenized again need not be its very ids.)
            assert!(acc >= v["usage"]["completion_tokens"].as_u64().unwrap() / 2, "the answer as prediction: {acc} accepted");
        }
        // Streamed: the same text, usage at the end.
        let mut streamed = body(prompt, extra.clone());
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let r = post(server, "/v1/completions", streamed);
        let events: Vec<Value> = r.events().iter().filter(|e| *e != "[DONE]").filter_map(|e| serde_json::from_str(e).ok()).collect();
        let text: String = events.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
        assert_eq!(text, want_text, "{extra}: streamed");
        assert!(events.last().unwrap()["usage"]["completion_tokens_details"]["accepted_prediction_tokens"].as_u64().unwrap() > 0);
    }
    // Opting out: no drafts, the same answer.
    let r = post(spec.addr, "/v1/completions", body(prompt, json!({"speculative": false})));
    assert_eq!(r.json()["choices"][0]["text"], want_text.as_str());
    assert_eq!(r.json()["usage"]["completion_tokens_details"]["accepted_prediction_tokens"], 0);
    // Chat too.
    let msgs = json!([{"role": "user", "content": prompt}]);
    let chat = |server, extra: Value| {
        let mut b = json!({"messages": msgs, "max_tokens": 16, "temperature": 0});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = post(server, "/v1/chat/completions", b);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let a = chat(plain.addr, json!({}));
    let answer = a["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let b = chat(plain.addr, json!({"prediction": {"type": "content", "content": answer}}));
    assert_eq!(b["choices"][0]["message"]["content"], a["choices"][0]["message"]["content"]);
    // TGI: `speculative` per request, the same text.
    let tgi = |server, on: bool| {
        let r = post(server, "/generate", json!({"inputs": prompt, "parameters": {"max_new_tokens": 24, "speculative": on}}));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["generated_text"].clone()
    };
    assert_eq!(tgi(plain.addr, true), tgi(spec.addr, false));
    // /metrics counts drafts.
    let m = get(spec.addr, "/metrics").body;
    let count = |name: &str| m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    assert!(count("vllm:spec_decode_num_accepted_tokens_total") > 0.0, "{m}");
    assert!(count("vllm:spec_decode_num_draft_tokens_total") >= count("vllm:spec_decode_num_accepted_tokens_total"));
}

#[test]
fn malformed_predictions_are_refused_by_name() {
    let s = start(EngineConfig::default(), ServerConfig::default());
    for p in [json!({"type": "text", "content": "x"}), json!({"type": "content", "content": 5}), json!({"type": "content", "content": [{"type": "image"}]}), json!("x")] {
        let r = post(s.addr, "/v1/completions", body("hi", json!({"prediction": p})));
        assert_eq!(r.status, 400, "{p}: {}", r.body);
        assert!(r.body.contains("prediction"), "{}", r.body);
    }
}
