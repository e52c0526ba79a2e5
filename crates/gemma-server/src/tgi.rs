//! Text Generation Inference API: `/generate`, `/generate_stream`, `/`,
//! `/info`, and Vertex AI's prediction route (`/tokenize` is in
//! `tokenizer_routes.rs`).
//!
//! As TGI: sampling happens when `do_sample` is true or any of
//! `temperature`/`top_k`/`top_p` is given, else greedy; an end-of-turn token
//! that stops generation is reported as the last token (`eos_token`).
//! Not supported (422): `best_of > 1`, `grammar`, `watermark`,
//! `typical_p`, `adapter_id`. With `decoder_input_details`, `prefill`
//! lists the prompt's tokens with their log-probabilities (the first `null`);
//! as TGI, that is refused when streaming.

use crate::openai::sse_stream;
use crate::{collect, failed, finished, ApiError, Completed, Flavor, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gemma::Gemma;
use gemma_engine::{Event, FinishReason, Request, Summary, TokenEvent};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// TGI's limit on stop sequences.
const MAX_STOP: usize = 4;
/// TGI's default limit on `top_n_tokens`.
const MAX_TOP_N: usize = 5;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::invalid(Flavor::Tgi, m)
}

/// A parsed TGI request.
struct Parsed {
    req: Request,
    inputs: String,
    details: bool,
    prefill_details: bool,
    full_text: bool,
    seed: Option<u64>,
    top_n: usize,
}

fn parse_request(s: &Shared, v: &Value) -> Result<Parsed, ApiError> {
    let g: &Gemma = s.engine.gemma();
    let inputs = v.get("inputs").and_then(Value::as_str).ok_or_else(|| invalid("'inputs' (a string) is required"))?.to_string();
    let empty = json!({});
    let p = match v.get("parameters") {
        None | Some(Value::Null) => &empty,
        Some(o) if o.is_object() => o,
        Some(_) => return Err(invalid("'parameters' must be an object")),
    };
    let f = |k: &str| -> Result<Option<f64>, ApiError> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| invalid(format!("'{k}' must be a number"))),
        }
    };
    let u = |k: &str| -> Result<Option<usize>, ApiError> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| invalid(format!("'{k}' must be a non-negative integer"))),
        }
    };
    let b = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    if u("best_of")?.unwrap_or(1) > 1 {
        return Err(invalid("best_of > 1 is not supported"));
    }
    let adapter_id = match p.get("adapter_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a.as_str()),
        Some(_) => return Err(invalid("'adapter_id' must be a string")),
    };
    let adapter = crate::adapters::by_adapter_id(s, adapter_id, crate::Flavor::Tgi)?;
    let grammar = crate::grammar::tgi_grammar(p).map_err(invalid)?;
    if b("watermark") {
        return Err(invalid("'watermark' is not supported"));
    }
    if f("typical_p")?.is_some_and(|t| t < 1.0) {
        return Err(invalid("'typical_p' is not supported"));
    }
    let mut prompt = g.encode_prompt(&inputs).map_err(|e| invalid(e.to_string()))?;
    if let Some(t) = u("truncate")? {
        // Keep BOS and the last `t` tokens.
        if t == 0 {
            return Err(invalid("'truncate' must be at least 1"));
        }
        if prompt.len() > t + 1 {
            let tail = prompt.split_off(prompt.len() - t);
            prompt.truncate(1);
            prompt.extend(tail);
        }
    }
    let max_new = u("max_new_tokens")?.unwrap_or(100);
    if max_new == 0 {
        return Err(invalid("'max_new_tokens' must be at least 1"));
    }
    let mut req = Request::new(prompt, max_new, g.stop_ids());
    req.adapter = adapter;
    // vLLM's and llama.cpp's `ignore_eos` (benchmarks: every answer runs to
    // max_new_tokens); a grammar needs its stop tokens to end.
    if b("ignore_eos") {
        if grammar.is_some() {
            return Err(invalid("'ignore_eos' cannot be combined with 'grammar' (the grammar ends at a stop token)"));
        }
        req.stop_ids.clear();
    }
    if let Some(gr) = grammar {
        req.constraint = Some(crate::grammar::compile(s, &gr).map_err(invalid)?);
    }
    let (temperature, top_k, top_p) = (f("temperature")?, u("top_k")?, f("top_p")?);
    let sampling = b("do_sample") || temperature.is_some() || top_k.is_some() || top_p.is_some();
    let mut seed = None;
    if sampling {
        let t = temperature.unwrap_or(1.0);
        if t <= 0.0 {
            return Err(invalid(format!("'temperature' must be strictly positive, got {t}")));
        }
        if top_p.is_some_and(|x| !(x > 0.0 && x < 1.0)) {
            return Err(invalid("'top_p' must be > 0.0 and < 1.0"));
        }
        if top_k == Some(0) {
            return Err(invalid("'top_k' must be strictly positive"));
        }
        req.params.temperature = t as f32;
        req.params.top_k = top_k.unwrap_or(0);
        req.params.top_p = top_p.unwrap_or(1.0) as f32;
        let sd = match p.get("seed") {
            None | Some(Value::Null) => crate::unix_seconds().wrapping_mul(0x9E37_79B9_7F4A_7C15),
            Some(x) => x.as_u64().ok_or_else(|| invalid("'seed' must be a non-negative integer"))?,
        };
        req.params.seed = sd;
        seed = Some(sd);
    }
    if let Some(r) = f("repetition_penalty")? {
        if r <= 0.0 {
            return Err(invalid("'repetition_penalty' must be strictly positive"));
        }
        req.params.repetition_penalty = r as f32;
    }
    req.frequency_penalty = f("frequency_penalty")?.unwrap_or(0.0) as f32;
    req.stop_strings = match p.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map(String::from).ok_or_else(|| invalid("'stop' must be a list of strings"))).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid("'stop' must be a list of strings")),
    };
    if req.stop_strings.len() > MAX_STOP {
        return Err(invalid(format!("'stop' takes at most {MAX_STOP} sequences, got {}", req.stop_strings.len())));
    }
    if req.stop_strings.iter().any(String::is_empty) {
        return Err(invalid("stop sequences must not be empty"));
    }
    let top_n = u("top_n_tokens")?.unwrap_or(0);
    if top_n > MAX_TOP_N {
        return Err(invalid(format!("'top_n_tokens' must be <= {MAX_TOP_N}")));
    }
    let details = b("details");
    req.logprobs = details || top_n > 0;
    req.top_logprobs = top_n;
    if details && b("decoder_input_details") {
        req.prompt_logprobs_from = Some(0);
    }
    Ok(Parsed { req, inputs, details, prefill_details: b("decoder_input_details"), full_text: b("return_full_text"), seed, top_n })
}

fn finish_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::StopToken(_) => "eos_token",
        FinishReason::StopString(_) => "stop_sequence",
        FinishReason::Length | FinishReason::ContextFull | FinishReason::Cancelled => "length",
    }
}

fn token_json(g: &Gemma, id: u32, text: &str, logprob: Option<f32>, special: bool) -> Value {
    let _ = g;
    json!({"id": id, "text": text, "logprob": logprob, "special": special})
}

/// The end-of-turn token that stopped generation, as TGI reports it.
fn stop_token(g: &Gemma, f: &FinishReason) -> Option<Value> {
    match f {
        FinishReason::StopToken(id) => Some(token_json(g, *id, &g.tokenizer.decode(&[*id], false).unwrap_or_default(), None, true)),
        _ => None,
    }
}

fn top_tokens(g: &Gemma, t: &TokenEvent) -> Value {
    Value::Array(
        t.top
            .iter()
            .map(|a| token_json(g, a.id, &g.tokenizer.decode(&[a.id], false).unwrap_or_default(), Some(a.logprob), g.tokenizer.is_control(a.id)))
            .collect(),
    )
}

fn generated_tokens(s: &Summary) -> usize {
    s.generated_tokens + usize::from(matches!(s.finish, FinishReason::StopToken(_)))
}

/// The `details` object of a finished request.
fn details(g: &Gemma, p: &Parsed, c: &Completed) -> Value {
    let mut tokens: Vec<Value> = c.tokens.iter().map(|t| token_json(g, t.id, &t.text, t.logprob, t.special)).collect();
    tokens.extend(stop_token(g, &c.summary.finish));
    let prefill: Vec<Value> = if p.prefill_details {
        c.prompt.iter().map(|t| token_json(g, t.id, &g.tokenizer.decode(&[t.id], false).unwrap_or_default(), t.logprob, g.tokenizer.is_control(t.id))).collect()
    } else {
        Vec::new()
    };
    let mut d = json!({"finish_reason": finish_reason(&c.summary.finish), "generated_tokens": generated_tokens(&c.summary), "seed": p.seed,
        "prefill": prefill, "tokens": tokens, "best_of_sequences": null});
    if p.top_n > 0 {
        d["top_tokens"] = Value::Array(c.tokens.iter().map(|t| top_tokens(g, t)).collect());
    }
    d
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("the body must be a JSON object"));
    }
    Ok(v)
}

/// Run one request to the end: the response object and timing headers.
async fn run_one(s: &Shared, v: &Value, route: &str, started: Instant) -> Result<(Value, Summary, usize), ApiError> {
    let p = parse_request(s, v)?;
    let handle = s.engine.submit(p.req.clone()).map_err(|e| ApiError::from_submit(Flavor::Tgi, e))?;
    let c = collect(handle).await.map_err(|e| ApiError::new(Flavor::Tgi, StatusCode::FAILED_DEPENDENCY, "generation", e))?;
    finished(s, route, &c.summary, started);
    let g = s.engine.gemma();
    let text = if p.full_text { format!("{}{}", p.inputs, c.text) } else { c.text.clone() };
    let mut out = json!({"generated_text": text});
    if p.details {
        out["details"] = details(g, &p, &c);
    }
    Ok((out, c.summary, c.text.len()))
}

fn respond(s: &Shared, route: &str, r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| {
        failed(s, route, e.status, &e.message);
        e.into_response()
    })
}

/// `POST /generate`.
pub async fn generate(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    let r = async {
        let v = parse_body(&body)?;
        let (out, summary, chars) = run_one(&s, &v, "/generate", started).await?;
        Ok((crate::timing_headers(&summary, started, chars), Json(out)).into_response())
    }
    .await;
    respond(&s, "/generate", r)
}

/// `POST /generate_stream`.
pub async fn generate_stream(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    let r = async {
        let v = parse_body(&body)?;
        stream_response(&s, &v, started)
    }
    .await;
    respond(&s, "/generate_stream", r)
}

fn stream_response(s: &Shared, v: &Value, started: Instant) -> Result<Response, ApiError> {
    let p = parse_request(s, v)?;
    if p.prefill_details {
        return Err(invalid("'decoder_input_details' is not supported when streaming tokens"));
    }
    let handle = s.engine.submit(p.req.clone()).map_err(|e| ApiError::from_submit(Flavor::Tgi, e))?;
    let (st, g) = (Arc::clone(s), Arc::clone(s.engine.gemma()));
    let prefix = if p.full_text { p.inputs.clone() } else { String::new() };
    let (seed, top_n, input_length) = (p.seed, p.top_n, p.req.prompt.len());
    // Token events lag one behind, so the last one can carry the final text.
    let mut pending: Option<TokenEvent> = None;
    let mut text = String::new();
    let mut index = 0usize;
    let event = move |index: usize, tok: Value, top: Value, text: Value, details: Value| {
        SseEvent::default().data(json!({"index": index, "token": tok, "top_tokens": top, "generated_text": text, "details": details}).to_string())
    };
    let events = sse_stream(handle, move |ev| {
        let mut out = Vec::new();
        match ev {
            Event::Prompt(_) => {}
            Event::Token(t) => {
                if let Some(prev) = pending.replace(t) {
                    index += 1;
                    text.push_str(&prev.text);
                    let top = if top_n > 0 { top_tokens(&g, &prev) } else { Value::Null };
                    out.push(event(index, token_json(&g, prev.id, &prev.text, prev.logprob, prev.special), top, Value::Null, Value::Null));
                }
            }
            Event::Done(sum) => {
                let details = json!({"finish_reason": finish_reason(&sum.finish), "generated_tokens": generated_tokens(&sum), "input_length": input_length, "seed": seed});
                let stop = stop_token(&g, &sum.finish);
                if let Some(prev) = pending.take() {
                    index += 1;
                    text.push_str(&prev.text);
                    let top = if top_n > 0 { top_tokens(&g, &prev) } else { Value::Null };
                    let tok = token_json(
                        &g,
                        prev.id,
                        &format!("{}{}", prev.text, if stop.is_none() { sum.tail_text.as_str() } else { "" }),
                        prev.logprob,
                        prev.special,
                    );
                    if stop.is_some() {
                        out.push(event(index, tok, top, Value::Null, Value::Null));
                    } else {
                        text.push_str(&sum.tail_text);
                        out.push(event(index, tok, top, json!(format!("{prefix}{text}")), details.clone()));
                    }
                }
                if let Some(stop) = stop {
                    index += 1;
                    text.push_str(&sum.tail_text);
                    out.push(event(index, stop, Value::Null, json!(format!("{prefix}{text}")), details));
                }
                finished(&st, "/generate_stream", &sum, started);
            }
            Event::Error(e) => {
                failed(&st, "/generate_stream", StatusCode::FAILED_DEPENDENCY, &e);
                out.push(SseEvent::default().data(json!({"error": e, "error_type": "generation"}).to_string()));
            }
        }
        out
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// `POST /`: `/generate_stream` when `stream` is true, else `/generate` as a one-element list.
pub async fn compat(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    let r = async {
        let v = parse_body(&body)?;
        if v.get("stream").and_then(Value::as_bool).unwrap_or(false) {
            return stream_response(&s, &v, started);
        }
        let (out, summary, chars) = run_one(&s, &v, "/", started).await?;
        Ok((crate::timing_headers(&summary, started, chars), Json(json!([out]))).into_response())
    }
    .await;
    respond(&s, "/", r)
}

/// `GET /info`.
pub async fn info(State(s): State<Shared>) -> Json<Value> {
    let g = s.engine.gemma();
    let c = s.engine.config();
    Json(json!({
        "model_id": s.config.model_id, "model_sha": null, "model_dtype": g.model.weights.dtype().to_string(),
        "model_device_type": "cpu", "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": c.max_batch + c.max_queue, "max_best_of": 1, "max_stop_sequences": MAX_STOP,
        "max_input_tokens": c.max_input_tokens, "max_total_tokens": c.max_total_tokens.min(g.model.config.max_position_embeddings),
        "max_batch_size": c.max_batch, "max_new_tokens": s.config.max_new_tokens, "prefill_chunk": c.prefill_chunk, "max_client_batch_size": 8, "validation_workers": 1, "max_top_n_tokens": MAX_TOP_N,
        "router": "gemma-rs", "version": env!("CARGO_PKG_VERSION"), "sha": null, "docker_label": null,
    }))
}

/// Vertex AI prediction: `{"instances": [{"inputs", "parameters"} | "text", …], "parameters"?}`
/// → `{"predictions": [generated_text, …]}`; instances run concurrently (they batch).
pub async fn vertex_predict(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    let r = async {
        let v = parse_body(&body)?;
        let instances = v.get("instances").and_then(Value::as_array).ok_or_else(|| invalid("'instances' (an array) is required"))?;
        if instances.is_empty() || instances.len() > 8 {
            return Err(invalid("'instances' must hold 1 to 8 items"));
        }
        let shared = v.get("parameters").cloned().unwrap_or(Value::Null);
        let bodies: Vec<Value> = instances
            .iter()
            .map(|i| match i {
                Value::String(t) => Ok(json!({"inputs": t, "parameters": shared})),
                Value::Object(_) if i.get("inputs").is_some() => {
                    let mut b = i.clone();
                    if b.get("parameters").is_none() {
                        b["parameters"] = shared.clone();
                    }
                    Ok(b)
                }
                _ => Err(invalid("each instance must be a string or an object with 'inputs'")),
            })
            .collect::<Result<_, _>>()?;
        let runs = bodies.iter().map(|b| run_one(&s, b, "vertex predict", started));
        let mut predictions = Vec::new();
        for r in futures_util::future::join_all(runs).await {
            predictions.push(r?.0["generated_text"].clone());
        }
        Ok(Json(json!({"predictions": predictions})).into_response())
    }
    .await;
    respond(&s, "vertex predict", r)
}
