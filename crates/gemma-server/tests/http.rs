//! The server on an ephemeral loopback port with the tiny fixture model,
//! driven by a minimal HTTP/1.1 client: every route, streaming framing,
//! error shapes, auth, limits, overload and disconnects.


mod common;
use common::*;
use gemma::Gemma;
use gemma_engine::EngineConfig;
use gemma_server::ServerConfig;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
#[test]
fn info_health_models_metrics_tokenize() {
    let s = server();
    assert_eq!(get(s.addr, "/health").status, 200);
    let info = get(s.addr, "/info").json();
    assert_eq!(info["model_id"], "tiny");
    assert_eq!(info["max_stop_sequences"], 4);
    let models = get(s.addr, "/v1/models").json();
    assert_eq!(models["data"][0]["id"], "tiny");
    let toks = post(s.addr, "/tokenize", json!({"inputs": "Hello world"})).json();
    let ids: Vec<u64> = toks.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let want: Vec<u64> = s.gemma.encode_prompt("Hello world").unwrap().iter().map(|&i| i as u64).collect();
    assert_eq!(ids, want);
    post(s.addr, "/generate", json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}}));
    let m = get(s.addr, "/metrics");
    assert!(m.body.contains("tgi_request_count 1") && m.body.contains("tgi_request_success 1"), "{}", m.body);
    assert!(m.body.contains("tgi_request_duration_bucket") && m.body.contains("tgi_queue_size 0"));
}

#[test]
fn openai_chat_plain_and_streaming() {
    let s = server();
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]);
    let r = post(s.addr, "/v1/chat/completions", json!({"model": "tiny", "messages": messages, "max_tokens": 8, "temperature": 0}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-generated-tokens").is_some());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let msgs = vec![gemma::ChatMessage::new("system", "Be brief."), gemma::ChatMessage::new("user", "Hello there")];
    let prompt = s.gemma.encode_chat(&msgs).unwrap();
    assert_eq!(text, greedy(&s.gemma, &prompt, 8));
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
    assert_eq!(v["usage"]["total_tokens"], v["usage"]["prompt_tokens"].as_u64().unwrap() + v["usage"]["completion_tokens"].as_u64().unwrap());

    let r = post(
        s.addr,
        "/v1/chat/completions",
        json!({"messages": messages, "max_tokens": 8, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let ev = r.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let (id, created) = (&chunks[0]["id"], &chunks[0]["created"]);
    assert!(chunks.iter().all(|c| &c["id"] == id && &c["created"] == created && c["object"] == "chat.completion.chunk"));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], v["usage"]["completion_tokens"]);
    let with_choice = &chunks[..chunks.len() - 1];
    let finish: Vec<&Value> = with_choice.iter().map(|c| &c["choices"][0]["finish_reason"]).collect();
    assert!(finish[..finish.len() - 1].iter().all(|f| f.is_null()));
    assert_eq!(finish.last().unwrap().as_str(), v["choices"][0]["finish_reason"].as_str());
    let streamed: String = with_choice.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, text);
}

/// `n` choices: independent sequences (seeds seed, seed+1, …) in the batch.
#[test]
fn openai_n_choices_plain_and_streaming() {
    let s = server();
    let body = json!({"messages": [{"role": "user", "content": "Tell me"}], "max_tokens": 6, "temperature": 1.0, "seed": 5, "n": 3});
    let v = post(s.addr, "/v1/chat/completions", body.clone()).json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
    let texts: Vec<&str> = choices.iter().map(|c| c["message"]["content"].as_str().unwrap()).collect();
    // Choice i is what n = 1 with seed 5 + i gives.
    for (i, t) in texts.iter().enumerate() {
        let mut one = body.clone();
        one["n"] = json!(1);
        one["seed"] = json!(5 + i);
        let w = post(s.addr, "/v1/chat/completions", one).json();
        assert_eq!(*t, w["choices"][0]["message"]["content"].as_str().unwrap(), "choice {i}");
    }
    let per: u64 = choices.len() as u64;
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 6 * per);

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let ev = post(s.addr, "/v1/chat/completions", sb).events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!(ev.iter().filter(|e| *e == "[DONE]").count(), 1);
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], v["usage"]["completion_tokens"]);
    for i in 0..3u64 {
        let mine: Vec<&Value> =
            chunks.iter().filter(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()) && c["choices"][0]["index"] == i).collect();
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant", "choice {i} starts with its role");
        assert!(mine.last().unwrap()["choices"][0]["finish_reason"].is_string());
        let text: String = mine.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, texts[i as usize], "streamed choice {i}");
    }
}

#[test]
fn openai_completions_with_logprobs() {
    let s = server();
    let r = post(s.addr, "/v1/completions", json!({"prompt": "The sky is", "max_tokens": 5, "temperature": 0, "logprobs": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), lp["token_logprobs"].as_array().unwrap().len());
    assert!(lp["token_logprobs"].as_array().unwrap().iter().all(|x| x.as_f64().unwrap() <= 0.0));
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), greedy(&s.gemma, &s.gemma.encode_prompt("The sky is").unwrap(), 5));
    let r = post(s.addr, "/v1/completions", json!({"prompt": "The sky is", "max_tokens": 5, "temperature": 0, "stream": true}));
    let ev = r.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let text: String =
        ev[..ev.len() - 1].iter().map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(text, v["choices"][0]["text"].as_str().unwrap());
}

#[test]
fn tgi_generate_stream_and_compat() {
    let s = server();
    let body = json!({"inputs": "Once upon", "parameters": {"max_new_tokens": 6, "details": true, "decoder_input_details": true, "top_n_tokens": 2, "return_full_text": true}});
    let r = post(s.addr, "/generate", body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("x-compute-time").is_some() && r.header("x-queue-time").is_some());
    let v = r.json();
    let want = greedy(&s.gemma, &s.gemma.encode_prompt("Once upon").unwrap(), 6);
    assert_eq!(v["generated_text"].as_str().unwrap(), format!("Once upon{want}"));
    let d = &v["details"];
    assert_eq!(d["generated_tokens"].as_u64().unwrap() as usize, d["tokens"].as_array().unwrap().len());
    assert_eq!(d["prefill"].as_array().unwrap().len(), s.gemma.encode_prompt("Once upon").unwrap().len());
    assert_eq!(d["top_tokens"][0].as_array().unwrap().len(), 2);

    let r = post(s.addr, "/generate_stream", json!({"inputs": "Once upon", "parameters": {"max_new_tokens": 6}}));
    let ev: Vec<Value> = r.events().iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(!r.body.contains("[DONE]"));
    let last = ev.last().unwrap();
    assert_eq!(last["generated_text"].as_str().unwrap(), want);
    assert!(last["details"]["finish_reason"].is_string());
    assert!(ev[..ev.len() - 1].iter().all(|e| e["generated_text"].is_null() && e["details"].is_null()));
    let joined: String = ev.iter().map(|e| e["token"]["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(joined, want, "token texts add up to generated_text");

    let r = post(s.addr, "/", json!({"inputs": "Once upon", "parameters": {"max_new_tokens": 6}}));
    assert_eq!(r.json()[0]["generated_text"].as_str().unwrap(), want);
    let r = post(s.addr, "/", json!({"inputs": "Once upon", "stream": true, "parameters": {"max_new_tokens": 3}}));
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
}

#[test]
fn error_shapes_and_limits() {
    let s = start(
        EngineConfig { max_input_tokens: 16, max_total_tokens: 64, ..EngineConfig::default() },
        ServerConfig { max_body_bytes: 4096, ..ServerConfig::default() },
    );
    let r = request(s.addr, "POST", "/v1/chat/completions", &[], "{not json");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("JSON"));
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "n": 9}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("n = 9"));
    let r = post(
        s.addr,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "code_interpreter"}]}),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("tools"));
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "f"}]}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("functions"));
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}));
    assert_eq!(r.status, 400);
    let r = post(s.addr, "/generate", json!({"inputs": "hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error_type"], "validation");
    let long = "word ".repeat(40);
    let r = post(s.addr, "/generate", json!({"inputs": long}));
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("max_input_tokens"));
    let r = post(s.addr, "/generate", json!({"inputs": "hi", "parameters": {"max_new_tokens": 1000}}));
    assert_eq!(r.status, 422);
    let r = post(s.addr, "/generate", json!({"inputs": "x".repeat(5000)}));
    assert_eq!(r.status, 413);
    let r = post(s.addr, "/generate", json!({"inputs": "hi", "parameters": {"temperature": -1}}));
    assert_eq!(r.status, 422);
    let r = post(s.addr, "/generate", json!({"parameters": {}}));
    assert_eq!(r.status, 422);
}

#[test]
fn api_key_guards_every_route_but_health_and_metrics() {
    let s = start(EngineConfig::default(), ServerConfig { api_key: Some("s3cret".into()), ..ServerConfig::default() });
    assert_eq!(get(s.addr, "/health").status, 200);
    assert_eq!(get(s.addr, "/metrics").status, 200, "scrapers carry no key");
    let r = get(s.addr, "/v1/models");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = post(s.addr, "/generate", json!({"inputs": "hi"}));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_type"], "authentication");
    let r = request(s.addr, "GET", "/v1/models", &[("Authorization", "Bearer wrong")], "");
    assert_eq!(r.status, 401);
    let r = request(s.addr, "GET", "/v1/models", &[("Authorization", "Bearer s3cret")], "");
    assert_eq!(r.status, 200);
}

#[test]
fn overload_gives_429_and_disconnects_free_slots() {
    let s = start(EngineConfig { max_batch: 1, max_queue: 1, ..EngineConfig::default() }, ServerConfig::default());
    let addr = s.addr;
    // Several long requests at once: one runs, one waits, the rest are refused.
    let body = json!({"inputs": "Hello", "parameters": {"max_new_tokens": 150}}).to_string();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let b = body.clone();
            std::thread::spawn(move || request(addr, "POST", "/generate", &[], &b))
        })
        .collect();
    let results: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<&Resp> = results.iter().filter(|r| r.status == 429).collect();
    assert!(!refused.is_empty(), "no request was refused: {:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(refused[0].json()["error_type"], "overloaded");
    assert!(results.iter().all(|r| r.status == 200 || r.status == 429));

    // A streaming client that goes away mid-stream frees the only slot.
    let mut c = TcpStream::connect(addr).unwrap();
    let b = json!({"inputs": "Hello", "parameters": {"max_new_tokens": 200}}).to_string();
    write!(c, "POST /generate_stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()).unwrap();
    // Wait for the first token (the request holds the slot), then hang up.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    // vLLM's series, as the inference gateway's picker reads them: one
    // running, one slot of one in use, its KV cache partly filled.
    let m = get(addr, "/metrics").body;
    let series = |name: &str| -> f64 { m.lines().find_map(|l| l.strip_prefix(&format!("{name}{{model_name=\"")).and_then(|r| r.split("} ").nth(1))).unwrap().parse().unwrap() };
    assert_eq!(series("vllm:num_requests_running"), 1.0, "{m}");
    let kv = series("vllm:kv_cache_usage_perc");
    assert!(kv > 0.0 && kv < 1.0, "{kv}");
    let steps = |addr| -> u64 {
        let m = get(addr, "/metrics").body;
        m.lines().find_map(|l| l.strip_prefix("tgi_batch_steps ")).unwrap().parse().unwrap()
    };
    let before = steps(addr);
    drop(c);
    let r = post(addr, "/generate", json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}}));
    assert_eq!(r.status, 200, "{}", r.body);
    // The abandoned stream did not run on to its 200 tokens first.
    assert!(steps(addr) - before < 60, "the disconnected request kept its slot");
}

#[test]
fn vertex_routes() {
    let s = start(
        EngineConfig::default(),
        ServerConfig { predict_route: Some("/predict".into()), health_route: Some("/ping".into()), ..ServerConfig::default() },
    );
    assert_eq!(get(s.addr, "/ping").status, 200);
    let r = post(
        s.addr,
        "/predict",
        json!({"instances": [{"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, "Once"], "parameters": {"max_new_tokens": 2}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json()["predictions"].as_array().unwrap().clone();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].as_str().unwrap(), greedy(&s.gemma, &s.gemma.encode_prompt("Hello").unwrap(), 3));
}

/// Regression (lost text): text held back as a possible start of a stop
/// string is returned when generation ends by length, on both APIs,
/// streaming and not.
#[test]
fn held_back_stop_text_is_kept_on_both_apis() {
    let s = server();
    let g = &s.gemma;
    for prompt in ["The quick brown fox", "Once upon a time there was", "Hello"] {
        let want = greedy(g, &g.encode_prompt(prompt).unwrap(), 10);
        let Some(last) = want.chars().last() else { continue };
        let stop = format!("{last}\u{7}ZQ");
        let v = post(s.addr, "/v1/completions", json!({"prompt": prompt, "max_tokens": 10, "temperature": 0, "stop": [stop]})).json();
        assert_eq!(v["choices"][0]["text"], want, "/v1/completions");
        let ev = post(s.addr, "/v1/completions", json!({"prompt": prompt, "max_tokens": 10, "temperature": 0, "stop": [stop], "stream": true})).events();
        let text: String = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(text, want, "/v1/completions streaming");
        let v = post(s.addr, "/generate", json!({"inputs": prompt, "parameters": {"max_new_tokens": 10, "stop": [stop]}})).json();
        assert_eq!(v["generated_text"], want, "/generate");
        let ev = post(s.addr, "/generate_stream", json!({"inputs": prompt, "parameters": {"max_new_tokens": 10, "stop": [stop]}})).events();
        let last_ev: Value = serde_json::from_str(ev.last().unwrap()).unwrap();
        assert_eq!(last_ev["generated_text"], want, "/generate_stream");
        let streamed: String = ev.iter().map(|e| serde_json::from_str::<Value>(e).unwrap()["token"]["text"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(streamed, want, "/generate_stream tokens");
    }
}

/// The log-probabilities a server returns for `ids` (no BOS) as the model
/// computes them after BOS: `[ids.len()]`, first entry given BOS.
fn reference_logprobs(g: &Gemma, ids: &[u32]) -> Vec<f32> {
    let mut full = vec![g.tokenizer.bos_id];
    full.extend(ids);
    let vocab = g.model.config.vocab_size;
    let logits = g.model.forward(&full, &mut g.model.new_cache(), gemma::LogitsMode::All).unwrap();
    (1..full.len())
        .map(|i| {
            let row = &logits[(i - 1) * vocab..i * vocab];
            row[full[i] as usize] - gemma_generate::log_sum_exp(row)
        })
        .collect()
}

/// lm-eval's `local-completions` loglikelihood request, exactly: token-id
/// prompts without BOS, `echo`, `logprobs: 1`, `max_tokens: 1`; it reads
/// `token_logprobs[ctxlen:-1]` and compares each with `max(top_logprobs)`.
#[test]
fn echo_scores_the_prompt_as_lm_eval_reads_it() {
    let s = server();
    let g = &s.gemma;
    let a = g.tokenizer.encode("The quick brown fox jumps", false).unwrap();
    let b = g.tokenizer.encode("Hello there, general", false).unwrap();
    let body = json!({"model": "tiny", "prompt": [a, b], "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": true});
    let r = post(s.addr, "/v1/completions", body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, (c, ids)) in choices.iter().zip([&a, &b]).enumerate() {
        assert_eq!(c["index"], i);
        let lp = &c["logprobs"];
        let tl = lp["token_logprobs"].as_array().unwrap();
        assert_eq!(tl.len(), ids.len() + 1, "the sent tokens and the generated one");
        let want = reference_logprobs(g, ids);
        for (k, w) in want.iter().enumerate() {
            let got = tl[k].as_f64().unwrap_or_else(|| panic!("entry {k} is {}", tl[k])) as f32;
            assert!((got - w).abs() < 1e-4, "prompt {i} token {k}: {got} vs {w}");
        }
        let tops = lp["top_logprobs"].as_array().unwrap();
        let ctxlen = 2;
        let greedy_flags: Vec<bool> = tl[ctxlen..tl.len() - 1]
            .iter()
            .zip(&tops[ctxlen..tl.len() - 1])
            .map(|(t, top)| {
                let max = top.as_object().unwrap().values().map(|x| x.as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
                assert!(t.as_f64().unwrap() <= max + 1e-9, "the argmax is missing from top_logprobs");
                t.as_f64().unwrap() == max
            })
            .collect();
        assert_eq!(greedy_flags.len(), ids.len() - ctxlen);
        let text = g.tokenizer.decode(ids, false).unwrap();
        assert!(c["text"].as_str().unwrap().starts_with(&text), "echo starts with the prompt");
    }
    // max_tokens 0 scores the prompt only; a string prompt list works the same.
    let v = post(s.addr, "/v1/completions", json!({"prompt": ["The quick brown fox jumps"], "max_tokens": 0, "echo": true, "logprobs": 0})).json();
    let tl = v["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap().clone();
    assert_eq!(tl.len(), a.len());
    assert_eq!(v["usage"]["completion_tokens"], 0);
    assert_eq!(v["choices"][0]["text"], "The quick brown fox jumps");
    // Opting out of the added BOS: the first token has nothing before it.
    let v = post(s.addr, "/v1/completions", json!({"prompt": a, "max_tokens": 0, "echo": true, "logprobs": 1, "add_special_tokens": false})).json();
    let tl = v["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap().clone();
    assert_eq!(tl.len(), a.len());
    assert!(tl[0].is_null() && v["choices"][0]["logprobs"]["top_logprobs"][0].is_null());
    // A prompt that already starts with BOS is used as sent: BOS echoed, first entry null.
    let mut with_bos = vec![g.tokenizer.bos_id];
    with_bos.extend(&a);
    let v = post(s.addr, "/v1/completions", json!({"prompt": with_bos, "max_tokens": 0, "echo": true, "logprobs": 1})).json();
    let tl = v["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap().clone();
    assert_eq!(tl.len(), a.len() + 1);
    assert!(tl[0].is_null());
    let want = reference_logprobs(g, &a);
    assert!((tl[1].as_f64().unwrap() as f32 - want[0]).abs() < 1e-4);
    // n choices per prompt: index = prompt * n + choice.
    let v = post(s.addr, "/v1/completions", json!({"prompt": ["Hi", "Ho"], "max_tokens": 2, "n": 2, "temperature": 0})).json();
    assert_eq!(v["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(v["choices"][0]["text"], greedy(g, &g.encode_prompt("Hi").unwrap(), 2));
    assert_eq!(v["choices"][2]["text"], greedy(g, &g.encode_prompt("Ho").unwrap(), 2));
}

/// vLLM's tokenizer routes (what lm-eval's remote tokenizer calls) and TGI's
/// prefill logprobs.
#[test]
fn tokenizer_routes_and_tgi_prefill_logprobs() {
    let s = server();
    let g = &s.gemma;
    let t = post(s.addr, "/tokenize", json!({"prompt": "Hello world", "add_special_tokens": false})).json();
    let ids: Vec<u32> = g.tokenizer.encode("Hello world", false).unwrap();
    assert_eq!(t["tokens"], json!(ids));
    assert_eq!(t["count"], ids.len());
    assert_eq!(t["max_model_len"], 256);
    let t = post(s.addr, "/tokenize", json!({"prompt": "Hello world"})).json();
    assert_eq!(t["tokens"][0], g.tokenizer.bos_id);
    let bos = post(s.addr, "/tokenize", json!({"prompt": g.tokenizer.bos_token, "add_special_tokens": false})).json();
    assert_eq!(bos["tokens"], json!([g.tokenizer.bos_id]));
    let d = post(s.addr, "/detokenize", json!({"tokens": ids})).json();
    assert_eq!(d["prompt"], "Hello world");
    let info = get(s.addr, "/tokenizer_info").json();
    assert_eq!(info["bos_token"], g.tokenizer.bos_token);
    assert_eq!(info["eos_token"], g.tokenizer.eos_token);
    assert!(info["chat_template"].as_str().unwrap().contains("start_of_turn"));
    assert!(post(s.addr, "/detokenize", json!({"tokens": [1, 100000]})).body.contains("not a token id"));
    assert_eq!(post(s.addr, "/tokenize", json!({})).status, 400);

    let r = post(s.addr, "/generate", json!({"inputs": "The quick brown fox", "parameters": {"max_new_tokens": 2, "details": true, "decoder_input_details": true}}));
    let prefill = r.json()["details"]["prefill"].as_array().unwrap().clone();
    let prompt = g.encode_prompt("The quick brown fox").unwrap();
    assert_eq!(prefill.len(), prompt.len());
    assert!(prefill[0]["logprob"].is_null());
    let want = reference_logprobs(g, &prompt[1..]);
    for (k, w) in want.iter().enumerate() {
        assert_eq!(prefill[k + 1]["id"], prompt[k + 1]);
        assert!((prefill[k + 1]["logprob"].as_f64().unwrap() as f32 - w).abs() < 1e-4);
    }
    let r = post(s.addr, "/generate_stream", json!({"inputs": "Hi", "parameters": {"details": true, "decoder_input_details": true}}));
    assert_eq!(r.status, 422);
}

/// Defaults that cannot run away and bad input that gets a clear 400.
#[test]
fn defaults_and_bad_requests() {
    let s = start(EngineConfig::default(), ServerConfig { model_id: "tiny".into(), max_new_tokens: 5, ..ServerConfig::default() });
    let v = post(s.addr, "/v1/completions", json!({"prompt": "Hello", "temperature": 0})).json();
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
    let v = post(s.addr, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "Hi"}], "temperature": 0})).json();
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 5);
    assert_eq!(get(s.addr, "/info").json()["max_new_tokens"], 5);
    for (body, needle) in [
        (json!({"prompt": ""}), "must not be empty"),
        (json!({"prompt": []}), "must not be empty"),
        (json!({"prompt": [[]]}), "has no tokens"),
        (json!({"prompt": [1, 2, 999999]}), "not a token id"),
        (json!({"prompt": [1, -2]}), "not a token id"),
        (json!({"prompt": [["a"]]}), "not a token id"),
        (json!({"prompt": [1, "a"]}), "'prompt' must be"),
        (json!({"prompt": {"a": 1}}), "'prompt' must be"),
        (json!({"prompt": "Hi", "logprobs": 21}), "'logprobs' must be"),
        (json!({"prompt": "Hi", "logprobs": -1}), "'logprobs' must be"),
        (json!({"prompt": "Hi", "echo": true, "stream": true}), "not supported with 'stream'"),
        (json!({"prompt": "Hi", "echo": "yes"}), "'echo' must be a boolean"),
        (json!({"prompt": "Hi", "max_tokens": 0}), "0 only scores the prompt"),
        (json!({"prompt": "Hi", "suffix": "x"}), "'suffix'"),
        (json!({"prompt": "Hi", "max_tokens": 100000}), "max_total_tokens"),
        (json!({"prompt": vec![5; 300], "echo": true, "max_tokens": 0, "logprobs": 1}), "context"),
        (json!({"prompt": vec!["Hi"; 65]}), "at most 64 prompts"),
    ] {
        let r = post(s.addr, "/v1/completions", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(needle), "{body}: {}", r.body);
    }
    for (body, needle) in [
        (json!({"messages": [{"role": "user"}]}), "needs 'content'"),
        (json!({"messages": [{"role": "user", "content": null}]}), "needs 'content'"),
        (json!({"messages": [{"content": "Hi"}]}), "'role'"),
    ] {
        let r = post(s.addr, "/v1/chat/completions", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(needle), "{body}: {}", r.body);
    }
}

/// A non-streaming request whose client hangs up is cancelled (real model:
/// a 2,000-token request would otherwise hold the only slot for seconds).
#[test]
fn real_model_non_streaming_disconnect_cancels() {
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        eprintln!("\n!!!!!!!!!! SKIPPED: real model not found at {} — run scripts/fetch-model.sh !!!!!!!!!!\n", path.display());
        assert!(std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_none(), "the real model is required (GEMMA_REQUIRE_REAL_MODEL is set)");
        return;
    }
    let s = start_with(path, EngineConfig { max_batch: 1, ..EngineConfig::default() }, ServerConfig::default());
    let steps = |addr| -> u64 {
        let m = get(addr, "/metrics").body;
        m.lines().find_map(|l| l.strip_prefix("tgi_batch_steps ")).unwrap().parse().unwrap()
    };
    for path in ["/v1/completions", "/generate"] {
        let body = if path == "/generate" {
            json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 2000}})
        } else {
            json!({"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0})
        }
        .to_string();
        let before = steps(s.addr);
        let mut c = TcpStream::connect(s.addr).unwrap();
        write!(c, "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        // Let it start generating, then hang up.
        while steps(s.addr) < before + 5 {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(c);
        let r = post(s.addr, "/generate", json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}}));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(steps(s.addr) - before < 500, "{path}: the abandoned request ran on ({} steps)", steps(s.addr) - before);
    }
}

fn person_schema() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"], "additionalProperties": false})
}

fn is_person(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.len() == 2
            && o.get("name").and_then(Value::as_str).is_some_and(|n| n.chars().count() <= 10)
            && o.get("age").and_then(Value::as_i64).is_some_and(|a| (0..=120).contains(&a))
    })
}

/// What the library generates greedily under `grammar` (the reference).
fn greedy_constrained(g: &Gemma, prompt: &[u32], n: usize, grammar: &gemma::Grammar) -> String {
    let mut req = g.request(prompt);
    req.max_new_tokens = n;
    req.params = gemma::SamplingParams::greedy();
    req.constraint = Some(g.compile_grammar(grammar).unwrap());
    g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap().text
}

/// OpenAI `response_format` and TGI `grammar`: outputs match (the tiny
/// model's weights are noise, so the grammar does all the work), bad
/// schemas are refused before any work, and constrained and plain requests
/// in one batch each give what they give alone.
#[test]
fn structured_output_on_both_apis() {
    let s = server();
    let messages = json!([{"role": "user", "content": "A person, please."}]);
    let rf = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": person_schema(), "strict": true}});
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "max_tokens": 120, "temperature": 1.0, "seed": 3, "n": 4, "response_format": rf}));
    assert_eq!(r.status, 200, "{}", r.body);
    for c in r.json()["choices"].as_array().unwrap() {
        let text = c["message"]["content"].as_str().unwrap();
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        assert!(is_person(&v), "{text}");
        assert_eq!(c["finish_reason"], "stop");
    }
    // Streaming: the concatenated deltas are the schema's JSON too.
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "max_tokens": 120, "temperature": 0, "stream": true, "response_format": rf}));
    let ev = r.events();
    let text: String = ev[..ev.len() - 1].iter().filter_map(|e| serde_json::from_str::<Value>(e).ok()).filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(String::from)).collect();
    assert!(is_person(&serde_json::from_str(&text).unwrap()), "{text}");

    // Strict mode refuses what OpenAI refuses, with the reason.
    let loose = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": loose, "strict": true}}}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("additionalProperties"), "{}", r.body);
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strange"}}}}));
    assert_eq!(r.status, 400, "{}", r.body);

    // TGI grammar: a regex, and a JSON schema.
    let r = post(s.addr, "/generate", json!({"inputs": "Code:", "parameters": {"max_new_tokens": 20, "grammar": {"type": "regex", "value": "[A-Z]{2}[0-9]{3}"}}}));
    assert_eq!(r.status, 200, "{}", r.body);
    let code = r.json()["generated_text"].as_str().unwrap().to_string();
    assert!(code.len() == 5 && code[..2].chars().all(|c| c.is_ascii_uppercase()) && code[2..].chars().all(|c| c.is_ascii_digit()), "{code:?}");
    let r = post(s.addr, "/generate", json!({"inputs": "Who:", "parameters": {"max_new_tokens": 120, "grammar": {"type": "json", "value": person_schema()}}}));
    assert!(is_person(&serde_json::from_str(r.json()["generated_text"].as_str().unwrap()).unwrap()), "{}", r.body);
    let r = post(s.addr, "/generate", json!({"inputs": "x", "parameters": {"grammar": {"type": "regex", "value": "(unclosed"}}}));
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("regex"), "{}", r.body);

    // Mixed batch: a constrained and a plain request at once, each equal to running alone.
    let prompt = s.gemma.encode_prompt("Who:").unwrap();
    let want_json = greedy_constrained(&s.gemma, &prompt, 60, &gemma::Grammar::JsonSchema(person_schema()));
    let want_plain = greedy(&s.gemma, &prompt, 24);
    let addr = s.addr;
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut params = json!({"max_new_tokens": if i % 2 == 0 { 60 } else { 24 }});
                if i % 2 == 0 {
                    params["grammar"] = json!({"type": "json", "value": person_schema()});
                }
                (i, post(addr, "/generate", json!({"inputs": "Who:", "parameters": params})).json()["generated_text"].as_str().unwrap().to_string())
            })
        })
        .collect();
    for t in threads {
        let (i, text) = t.join().unwrap();
        assert_eq!(&text, if i % 2 == 0 { &want_json } else { &want_plain }, "request {i}");
    }
    // The mask work shows in the metrics: masks built, masks skipped, compile times.
    let m = get(s.addr, "/metrics").body;
    let value = |name: &str| m.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("{name} missing"));
    assert!(value("gemma_grammar_masks_total") > 0.0);
    assert!(value("gemma_grammar_masks_skipped_total") > 0.0, "{m}");
    assert!(value("gemma_grammar_checks_total") >= value("gemma_grammar_masks_skipped_total"));
    assert!(value("gemma_grammar_compile_duration_count") >= 5.0);
}

/// Per-request adapters: each request gets what the model loaded with its
/// adapter gives alone (library, greedy), in a batch that mixes adapters
/// and none; adapters load and unload at run time.
#[test]
fn per_request_adapters() {
    let s = start_full(testdata("tiny-gemma3"), EngineConfig::default(), ServerConfig { model_id: "tiny".into(), ..ServerConfig::default() }, &[("a", "tiny-gemma3-lora"), ("b", "tiny-gemma3-lora-rs")]);
    let ids: Vec<String> = get(s.addr, "/v1/models").json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["tiny", "a", "b"]);
    let prompt = s.gemma.encode_prompt("Hello there").unwrap();
    let with = |dir: &str| {
        let g = Gemma::load_with(testdata("tiny-gemma3"), &gemma::LoadOptions { lora: Some(testdata(dir)), ..Default::default() }, &mut |_, _| {}).unwrap();
        greedy(&g, &prompt, 16)
    };
    let want = [with("tiny-gemma3-lora"), with("tiny-gemma3-lora-rs"), greedy(&s.gemma, &prompt, 16)];
    assert!(want[0] != want[2] && want[1] != want[2], "the adapters change the output (the test can fail)");
    let addr = s.addr;
    let threads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let mut params = json!({"max_new_tokens": 16});
                if i % 3 < 2 {
                    params["adapter_id"] = json!(["a", "b"][i % 3]);
                }
                (i, post(addr, "/generate", json!({"inputs": "Hello there", "parameters": params})).json()["generated_text"].as_str().unwrap().to_string())
            })
        })
        .collect();
    for t in threads {
        let (i, text) = t.join().unwrap();
        assert_eq!(text, want[i % 3], "request {i}");
    }
    // OpenAI: `model` names the adapter; any other name is the base model.
    let r = post(s.addr, "/v1/completions", json!({"model": "b", "prompt": "Hello there", "max_tokens": 16, "temperature": 0}));
    assert_eq!(r.json()["choices"][0]["text"], want[1].as_str());
    let r = post(s.addr, "/v1/completions", json!({"model": "gpt-4o", "prompt": "Hello there", "max_tokens": 16, "temperature": 0}));
    assert_eq!(r.json()["choices"][0]["text"], want[2].as_str());
    // Unknown adapter_id: 404 with the known ones.
    let r = post(s.addr, "/generate", json!({"inputs": "x", "parameters": {"adapter_id": "zzz"}}));
    assert_eq!(r.status, 404);
    assert!(r.body.contains("zzz") && r.body.contains("a, b"), "{}", r.body);
    // Load and unload at run time.
    let dir = testdata("tiny-gemma3-lora").display().to_string();
    let r = post(s.addr, "/v1/adapters", json!({"name": "c", "path": dir}));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(s.addr, "/generate", json!({"inputs": "Hello there", "parameters": {"max_new_tokens": 16, "adapter_id": "c"}}));
    assert_eq!(r.json()["generated_text"], want[0].as_str());
    assert_eq!(post(s.addr, "/v1/adapters", json!({"name": "c", "path": dir})).status, 409);
    assert_eq!(post(s.addr, "/v1/adapters", json!({"name": "tiny", "path": dir})).status, 409);
    let r = post(s.addr, "/v1/adapters", json!({"name": "d", "path": "/nonexistent/adapter"}));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("adapter_config.json"), "{}", r.body);
    assert_eq!(post(s.addr, "/v1/adapters", json!({"name": "bad name!", "path": dir})).status, 400);
    assert_eq!(request(s.addr, "DELETE", "/v1/adapters/c", &[], "").status, 200);
    assert_eq!(request(s.addr, "DELETE", "/v1/adapters/c", &[], "").status, 404);
    assert_eq!(post(s.addr, "/generate", json!({"inputs": "x", "parameters": {"adapter_id": "c"}})).status, 404);
}

/// Tool calling: `required` and a named function always give a call whose
/// arguments match the schema (streamed: the name first, then argument
/// fragments); `none` gives text; `auto` gives a call or text; tool
/// results render back; bad tool requests are 400s naming the problem.
#[test]
fn tool_calls() {
    // The tiny model with a longer context (its 256 positions are arbitrary; declarations need room).
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(testdata("tiny-gemma3")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap().replace("\"max_position_embeddings\": 256", "\"max_position_embeddings\": 2048");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let s = start_with(dir.path().to_path_buf(), EngineConfig::default(), ServerConfig { model_id: "tiny".into(), ..ServerConfig::default() });
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["a", "b"], "additionalProperties": false}}}
    ]);
    let messages = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let check_args = |name: &str, args: &str| {
        let v: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("arguments not JSON ({e}): {args}"));
        match name {
            "get_weather" => assert!(v["city"].as_str().is_some_and(|c| c.chars().count() <= 12) && v.as_object().unwrap().len() == 1, "{args}"),
            "add" => assert!(v["a"].as_i64().is_some_and(|a| (0..=99).contains(&a)) && v["b"].as_i64().is_some_and(|b| (0..=99).contains(&b)), "{args}"),
            other => panic!("unknown tool {other}"),
        }
    };
    for seed in 0..3 {
        let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "tools": tools, "tool_choice": "required", "parallel_tool_calls": false, "max_tokens": 80, "temperature": 1.0, "seed": seed}));
        assert_eq!(r.status, 200, "{}", r.body);
        let c = &r.json()["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{c}");
        assert!(c["message"]["content"].is_null());
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        check_args(call["function"]["name"].as_str().unwrap(), call["function"]["arguments"].as_str().unwrap());
    }
    // A named function: that one, finish "stop" (as OpenAI).
    let named = json!({"type": "function", "function": {"name": "add"}});
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "tools": tools, "tool_choice": named, "max_tokens": 80, "temperature": 0}));
    let c = &r.json()["choices"][0];
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["message"]["tool_calls"][0]["function"]["name"], "add");
    let non_streamed = c["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap().to_string();
    check_args("add", &non_streamed);
    // Streaming: name first (arguments ""), then fragments that add up.
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "tools": tools, "tool_choice": named, "max_tokens": 80, "temperature": 0, "stream": true}));
    let ev = r.events();
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas[0][0]["function"]["name"], "add");
    assert_eq!(deltas[0][0]["function"]["arguments"], "");
    let args: String = deltas[1..].iter().map(|d| d[0]["function"]["arguments"].as_str().unwrap()).collect();
    assert_eq!(args, non_streamed);
    assert!(deltas.len() >= 2);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    // none: text, the tools not offered.
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "tools": tools, "tool_choice": "none", "max_tokens": 8, "temperature": 0}));
    let c = &r.json()["choices"][0];
    assert!(c["message"]["tool_calls"].is_null() && c["message"]["content"].is_string());
    let plain = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "max_tokens": 8, "temperature": 0})).json();
    assert_eq!(c["message"]["content"], plain["choices"][0]["message"]["content"]);
    // auto: a call that fits, or text that is not a call.
    for seed in 0..4 {
        let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "tools": tools, "max_tokens": 40, "temperature": 1.0, "seed": seed}));
        let c = &r.json()["choices"][0];
        match c["message"]["tool_calls"].as_array() {
            Some(calls) => calls.iter().for_each(|call| check_args(call["function"]["name"].as_str().unwrap(), call["function"]["arguments"].as_str().unwrap())),
            None => assert!(!c["message"]["content"].as_str().unwrap().trim_start().starts_with('{'), "{c}"),
        }
    }
    // auto, streamed with logprobs: a text answer held back while it might
    // have been a call still streams every token's logprob, and the text
    // equals the non-streamed answer's.
    let mut texts = 0;
    for seed in 0..6 {
        let body = json!({"messages": messages, "tools": tools, "max_tokens": 12, "temperature": 1.0, "seed": seed, "logprobs": true, "stream": true, "stream_options": {"include_usage": true}});
        let ev = post(s.addr, "/v1/chat/completions", body.clone()).events();
        let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        if chunks.iter().any(|c| c["choices"][0]["delta"].get("tool_calls").is_some()) {
            continue;
        }
        texts += 1;
        let lps: Vec<Value> = chunks.iter().filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array()).flatten().cloned().collect();
        let usage = chunks.iter().find_map(|c| c["usage"].get("completion_tokens").and_then(Value::as_u64)).unwrap();
        assert!(lps.len() as u64 >= usage && usage > 0, "seed {seed}: {} logprobs for {usage} tokens", lps.len());
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        let mut plain = body.clone();
        plain["stream"] = json!(false);
        plain.as_object_mut().unwrap().remove("stream_options");
        let whole = post(s.addr, "/v1/chat/completions", plain).json()["choices"][0].clone();
        assert_eq!(whole["message"]["content"], text, "seed {seed}");
        assert_eq!(whole["logprobs"]["content"], Value::Array(lps), "seed {seed}");
    }
    assert!(texts > 0, "no seed gave a text answer");
    // A conversation with a call and its result renders and runs.
    let convo = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    ]);
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": convo, "tools": tools, "tool_choice": "none", "max_tokens": 4}));
    assert_eq!(r.status, 200, "{}", r.body);
    // Bad input.
    for (body, want) in [
        (json!({"messages": messages, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "fly"}}}), "'fly'"),
        (json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}], "tools": tools}), "'zz'"),
        (json!({"messages": messages, "tools": [{"type": "function", "function": {"name": "bad name"}}]}), "bad name"),
        (json!({"messages": messages, "tools": tools, "response_format": {"type": "json_object"}}), "together"),
    ] {
        let r = post(s.addr, "/v1/chat/completions", body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(want), "{want}: {}", r.body);
    }
}

/// FunctionGemma's control-token calls (the fixture gives the tiny model
/// FunctionGemma's tokens and a template that takes `tools`): `required`
/// and a named function give parsed calls whose arguments fit the schemas;
/// streaming gives the same call; the history (calls and results) goes
/// through the template's own `tools` path; `auto` gives text or a call.
#[test]
fn function_gemma_tool_calls() {
    let s = start_with(testdata("tiny-functiongemma"), EngineConfig::default(), ServerConfig { model_id: "tiny".into(), ..ServerConfig::default() });
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "add", "description": "Sum", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
    ]);
    let check_args = |name: &str, args: &str| {
        let v: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("arguments not JSON ({e}): {args}"));
        let o = v.as_object().unwrap();
        match name {
            "get_weather" => {
                assert!(v["city"].as_str().is_some_and(|c| !c.is_empty() && c.chars().count() <= 12), "{args}");
                assert!(o.keys().all(|k| k == "city" || k == "unit") && o.get("unit").is_none_or(|u| u == "C" || u == "F"), "{args}");
            }
            "add" => assert!(v["a"].is_i64() && v["b"].is_i64() && o.len() == 2, "{args}"),
            other => panic!("unknown tool {other}"),
        }
    };
    let messages = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    for seed in 0..4 {
        let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "tools": tools, "tool_choice": "required", "parallel_tool_calls": false, "max_tokens": 60, "temperature": 1.0, "seed": seed}));
        assert_eq!(r.status, 200, "{}", r.body);
        let c = &r.json()["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{c}");
        for call in c["message"]["tool_calls"].as_array().unwrap() {
            check_args(call["function"]["name"].as_str().unwrap(), call["function"]["arguments"].as_str().unwrap());
        }
    }
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let body = json!({"messages": messages, "tools": tools, "tool_choice": named, "max_tokens": 60, "temperature": 0});
    let c = post(s.addr, "/v1/chat/completions", body.clone()).json()["choices"][0].clone();
    assert_eq!(c["message"]["tool_calls"][0]["function"]["name"], "get_weather", "{c}");
    let args = c["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap().to_string();
    check_args("get_weather", &args);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let ev = post(s.addr, "/v1/chat/completions", streamed).events();
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    assert_eq!(deltas[1..].iter().map(|d| d[0]["function"]["arguments"].as_str().unwrap()).collect::<String>(), args);

    // The history through the template's `tools`: the prompt is what the
    // template renders from Hugging Face-shaped messages.
    let history = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    ]);
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": history, "tools": tools, "max_tokens": 4, "temperature": 0}));
    assert_eq!(r.status, 200, "{}", r.body);
    let hf = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1", "name": "get_weather"}
    ]);
    let decls: Vec<Value> = tools.as_array().unwrap().iter().map(|t| json!({"type": "function", "function": t["function"]})).collect();
    let text = s.gemma.tokenizer.apply_chat_template_json(&hf, Some(&Value::Array(decls)), true).unwrap();
    assert!(text.contains("<start_function_declaration>declaration:get_weather{") && text.contains("<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>") && text.contains("response:get_weather{value:<escape>sunny<escape>}"), "{text}");
    assert_eq!(r.json()["usage"]["prompt_tokens"], s.gemma.tokenizer.encode(&text, s.gemma.tokenizer.add_bos).unwrap().len(), "{text}");
    let bad = json!([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}]);
    let r = post(s.addr, "/v1/chat/completions", json!({"messages": bad, "tools": tools}));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("'zz'"), "{}", r.body);

    // auto: a call that fits, or text that holds no call.
    for seed in 0..4 {
        let r = post(s.addr, "/v1/chat/completions", json!({"messages": messages, "tools": tools, "parallel_tool_calls": false, "max_tokens": 60, "temperature": 1.0, "seed": seed}));
        let c = &r.json()["choices"][0];
        match c["message"]["tool_calls"].as_array() {
            Some(calls) => calls.iter().for_each(|k| check_args(k["function"]["name"].as_str().unwrap(), k["function"]["arguments"].as_str().unwrap())),
            None => assert!(c["message"]["content"].is_string(), "{c}"),
        }
    }
}

/// OpenAI `/v1/embeddings` on the tiny EmbeddingGemma: a string or a list,
/// `dimensions`, base64, prompts; what the library gives; generation routes
/// refuse an embedding model.
#[test]
fn embeddings_route() {
    let s = start_with(testdata("tiny-embeddinggemma"), EngineConfig::default(), ServerConfig { model_id: "tiny-embed".into(), ..ServerConfig::default() });
    let texts = ["The quick brown fox", "Paris is the capital of France."];
    let want = s.gemma.embed(&texts.map(String::from), &gemma::EmbedOptions::default()).unwrap();
    let r = post(s.addr, "/v1/embeddings", json!({"input": texts, "model": "x"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list");
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(d["index"], i);
        let got: Vec<f32> = d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got, want[i].values);
    }
    assert_eq!(v["usage"]["prompt_tokens"], want.iter().map(|e| e.tokens).sum::<usize>());
    // One string, 16 dimensions, base64 (little-endian f32), a named prompt.
    let r = post(s.addr, "/v1/embeddings", json!({"input": texts[0], "dimensions": 16, "encoding_format": "base64", "prompt_name": "query"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let b64 = r.json()["data"][0]["embedding"].as_str().unwrap().to_string();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let got: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let opts = gemma::EmbedOptions { prompt_name: Some("query".into()), dimensions: Some(16), ..Default::default() };
    assert_eq!(got, s.gemma.embed(&[texts[0].to_string()], &opts).unwrap()[0].values);
    // Bad input.
    for (body, want) in [
        (json!({"input": []}), "empty"),
        (json!({"input": 5}), "input"),
        (json!({"input": "x", "dimensions": 4096}), "dimensions"),
        (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
        (json!({"input": "x", "prompt_name": "nope"}), "nope"),
    ] {
        let r = post(s.addr, "/v1/embeddings", body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(want), "{want}: {}", r.body);
    }
    let r = post(s.addr, "/v1/completions", json!({"prompt": "hi", "max_tokens": 2}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("embedding model"), "{}", r.body);
}

/// TGI `ignore_eos` (as vLLM's): every answer runs to max_new_tokens;
/// with a grammar it is refused.
#[test]
fn ignore_eos_runs_to_the_limit() {
    let s = server();
    let mut stopped = 0;
    for seed in 0..8 {
        let params = json!({"max_new_tokens": 60, "do_sample": true, "temperature": 3.0, "seed": seed, "details": true});
        let plain = post(s.addr, "/generate", json!({"inputs": "Hi", "parameters": params})).json();
        stopped += (plain["details"]["finish_reason"] != "length") as usize;
        let mut p = params.clone();
        p["ignore_eos"] = json!(true);
        let r = post(s.addr, "/generate", json!({"inputs": "Hi", "parameters": p})).json();
        assert_eq!(r["details"]["finish_reason"], "length", "{r}");
        assert_eq!(r["details"]["generated_tokens"], 60);
    }
    eprintln!("{stopped} of 8 plain answers stopped early");
    let r = post(s.addr, "/generate", json!({"inputs": "x", "parameters": {"ignore_eos": true, "grammar": {"type": "regex", "value": "[0-9]+"}}}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("ignore_eos"), "{}", r.body);
}

/// A chat one turn longer than the last reuses the last one's prompt
/// (OpenAI's `usage.prompt_tokens_details.cached_tokens`), streamed or not,
/// with the same answer as a server without the prefix cache; the metrics
/// count the reused tokens.
#[test]
fn chat_turns_reuse_the_previous_prompt() {
    let cfg = |bytes| EngineConfig { prefill_chunk: 4, prefix_cache_bytes: bytes, ..EngineConfig::default() };
    let (on, off) = (start(cfg(64 << 20), ServerConfig::default()), start(cfg(0), ServerConfig::default()));
    let mut messages = vec![json!({"role": "system", "content": "You are terse. You answer with one word whenever you can."}), json!({"role": "user", "content": "Name a colour."})];
    for turn in 0..3 {
        let body = json!({"messages": messages, "max_tokens": 5, "temperature": 0, "logprobs": true});
        let (a, b) = (post(on.addr, "/v1/chat/completions", body.clone()).json(), post(off.addr, "/v1/chat/completions", body.clone()).json());
        assert_eq!(a["choices"], b["choices"], "turn {turn}");
        let cached = a["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
        assert_eq!(b["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        if turn > 0 {
            assert!(cached > 0 && cached < a["usage"]["prompt_tokens"].as_u64().unwrap(), "turn {turn}: {}", a["usage"]);
        }
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let r = post(on.addr, "/v1/chat/completions", streamed);
        let last_usage = r.body.lines().filter_map(|l| l.strip_prefix("data: ")).rfind(|d| d.contains("\"usage\":{")).unwrap().to_string();
        let u: serde_json::Value = serde_json::from_str(&last_usage).unwrap();
        assert!(u["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{last_usage}");
        messages.push(json!({"role": "assistant", "content": a["choices"][0]["message"]["content"]}));
        messages.push(json!({"role": "user", "content": format!("And another one, number {turn}?")}));
    }
    let metrics = get(on.addr, "/metrics").body;
    let hits: u64 = metrics.lines().find_map(|l| l.strip_prefix("gemma_prefix_cache_hit_tokens ")).unwrap().parse().unwrap();
    assert!(hits > 0, "{metrics}");
}

/// Type errors name the field, flattened sampling fields included; replayed
/// tool calls may omit `type` and give arguments as an object.
#[test]
fn type_errors_name_the_field() {
    let s = server();
    let hi = json!([{"role": "user", "content": "hi"}]);
    for (path, body, want) in [
        ("/v1/chat/completions", json!({"messages": hi, "temperature": "hot"}), "'temperature' must be a number"),
        ("/v1/chat/completions", json!({"messages": hi, "stop": 5}), "'stop' must be a string or a list of strings"),
        ("/v1/chat/completions", json!({"messages": hi, "max_tokens": -1}), "'max_tokens' must be a non-negative integer"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": 5}]}), "'messages[0].content'"),
        ("/v1/completions", json!({"prompt": "hi", "n": "two"}), "'n' must be a non-negative integer"),
        ("/v1/completions", json!({"prompt": "hi", "echo": "yes"}), "'echo' must be a boolean"),
        ("/v1/embeddings", json!({"input": "x", "dimensions": "big"}), "'dimensions'"),
    ] {
        let r = post(s.addr, path, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(want), "{body}: {}", r.body);
    }
    let r = post(s.addr, "/generate", json!({"inputs": "hi", "parameters": {"top_k": "many"}}));
    assert_eq!(r.status, 422);
    assert!(r.body.contains("'parameters.top_k'"), "{}", r.body);
    let convo = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    ]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let fg = start_with(testdata("tiny-functiongemma"), EngineConfig::default(), ServerConfig::default());
    let r = post(fg.addr, "/v1/chat/completions", json!({"messages": convo, "tools": tools, "max_tokens": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
}
