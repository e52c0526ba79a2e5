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
use crate::schema::tgi::{Details, GenerateRequest, GenerateResponse, Info, StreamDetails, StreamResponse, Token};
use crate::schema::typed;
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
    /// Images of `inputs` (markdown `![](…)`) and where their runs go.
    images: Vec<gemma::vision::PreparedImage>,
    places: Vec<gemma::vision::ImagePlace>,
    inputs: String,
    details: bool,
    prefill_details: bool,
    full_text: bool,
    seed: Option<u64>,
    top_n: usize,
}

async fn parse_request(s: &Shared, v: &Value) -> Result<Parsed, ApiError> {
    let g: &Gemma = s.engine.gemma();
    let GenerateRequest { inputs, parameters, .. } = typed(v, Flavor::Tgi)?;
    let params = parameters.unwrap_or_default();
    let empty = json!({});
    // The grammar compiler reads the raw parameters (typed above).
    let p = v.get("parameters").filter(|p| p.is_object()).unwrap_or(&empty);
    let b = |x: Option<bool>| x.unwrap_or(false);
    if params.best_of.unwrap_or(1) > 1 {
        return Err(invalid("best_of > 1 is not supported"));
    }
    let adapter_id = params.adapter_id.as_deref();
    let adapter = crate::adapters::by_adapter_id(s, adapter_id, crate::Flavor::Tgi)?;
    let grammar = crate::grammar::tgi_grammar(p).map_err(invalid)?;
    if b(params.watermark) {
        return Err(invalid("'watermark' is not supported"));
    }
    if params.typical_p.is_some_and(|t| t < 1.0) {
        return Err(invalid("'typical_p' is not supported"));
    }
    // Markdown images (multimodal models only; a text model reads them as text).
    let boi = g.vision.as_ref().and_then(|vis| g.tokenizer.id_to_token(vis.spec.mark_token()));
    let (text, urls) = match &boi {
        Some(b) => crate::images::markdown_images(&inputs, b),
        None => (inputs.clone(), Vec::new()),
    };
    let (mut prompt, images, places) = if urls.is_empty() {
        (g.encode_prompt(&inputs).map_err(|e| invalid(e.to_string()))?, Vec::new(), Vec::new())
    } else {
        if params.truncate.is_some() {
            return Err(invalid("'truncate' cannot be used with images (it could cut an image's tokens)"));
        }
        let pas = crate::images::pan_and_scan(v, s.config.pan_and_scan)?;
        let images = crate::images::prepare(s, urls, pas).await?;
        let slots: Vec<gemma::vision::ImageSlot> = images.iter().map(|im| im.slot()).collect();
        let (ids, places) = g.image_prompt(&text, &slots).map_err(|e| invalid(e.to_string()))?;
        (ids, images, places)
    };
    if let Some(t) = params.truncate.map(|t| t as usize) {
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
    let max_new = params.max_new_tokens.map_or(100, |m| m as usize);
    if max_new == 0 {
        return Err(invalid("'max_new_tokens' must be at least 1"));
    }
    let mut req = Request::new(prompt, max_new, g.stop_ids());
    req.adapter = adapter;
    // vLLM's and llama.cpp's `ignore_eos` (benchmarks: every answer runs to
    // max_new_tokens); a grammar needs its stop tokens to end.
    if b(params.ignore_eos) {
        if grammar.is_some() {
            return Err(invalid("'ignore_eos' cannot be combined with 'grammar' (the grammar ends at a stop token)"));
        }
        req.stop_ids.clear();
    }
    if let Some(gr) = grammar {
        req.constraint = Some(crate::grammar::compile(s, &gr).map_err(invalid)?);
    }
    let (temperature, top_k, top_p) = (params.temperature, params.top_k.map(|k| k as usize), params.top_p);
    let sampling = b(params.do_sample) || temperature.is_some() || top_k.is_some() || top_p.is_some();
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
        let sd = params.seed.unwrap_or_else(|| crate::unix_seconds().wrapping_mul(0x9E37_79B9_7F4A_7C15));
        req.params.seed = sd;
        seed = Some(sd);
    }
    if let Some(r) = params.repetition_penalty {
        if r <= 0.0 {
            return Err(invalid("'repetition_penalty' must be strictly positive"));
        }
        req.params.repetition_penalty = r as f32;
    }
    req.frequency_penalty = params.frequency_penalty.unwrap_or(0.0) as f32;
    req.stop_strings = params.stop.unwrap_or_default();
    if req.stop_strings.len() > MAX_STOP {
        return Err(invalid(format!("'stop' takes at most {MAX_STOP} sequences, got {}", req.stop_strings.len())));
    }
    if req.stop_strings.iter().any(String::is_empty) {
        return Err(invalid("stop sequences must not be empty"));
    }
    let top_n = params.top_n_tokens.map_or(0, |n| n as usize);
    if top_n > MAX_TOP_N {
        return Err(invalid(format!("'top_n_tokens' must be <= {MAX_TOP_N}")));
    }
    req.speculation = s.config.speculation.clone();
    match params.speculative {
        Some(false) => req.speculation.mode = gemma::SpecMode::Off,
        Some(true) if req.speculation.mode == gemma::SpecMode::Off => req.speculation.mode = gemma::SpecMode::Ngram,
        _ => {}
    }
    let details = b(params.details);
    let prefill_details = b(params.decoder_input_details);
    req.logprobs = details || top_n > 0;
    req.top_logprobs = top_n;
    if details && prefill_details {
        req.prompt_logprobs_from = Some(0);
    }
    Ok(Parsed { req, images, places, inputs, details, prefill_details, full_text: b(params.return_full_text), seed, top_n })
}

fn finish_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::StopToken(_) => "eos_token",
        FinishReason::StopString(_) => "stop_sequence",
        FinishReason::Length | FinishReason::ContextFull | FinishReason::Cancelled => "length",
    }
}

fn token(id: u32, text: &str, logprob: Option<f32>, special: bool) -> Token {
    Token { id, text: text.into(), logprob, special }
}

/// The end-of-turn token that stopped generation, as TGI reports it.
fn stop_token(g: &Gemma, f: &FinishReason) -> Option<Token> {
    match f {
        FinishReason::StopToken(id) => Some(token(*id, &g.tokenizer.decode(&[*id], false).unwrap_or_default(), None, true)),
        _ => None,
    }
}

fn top_tokens(g: &Gemma, t: &TokenEvent) -> Vec<Token> {
    t.top.iter().map(|a| token(a.id, &g.tokenizer.decode(&[a.id], false).unwrap_or_default(), Some(a.logprob), g.tokenizer.is_control(a.id))).collect()
}

fn generated_tokens(s: &Summary) -> usize {
    s.generated_tokens + usize::from(matches!(s.finish, FinishReason::StopToken(_)))
}

/// The `details` object of a finished request.
fn details(g: &Gemma, p: &Parsed, c: &Completed) -> Details {
    let mut tokens: Vec<Token> = c.tokens.iter().map(|t| token(t.id, &t.text, t.logprob, t.special)).collect();
    tokens.extend(stop_token(g, &c.summary.finish));
    let prefill = if p.prefill_details {
        c.prompt.iter().map(|t| token(t.id, &g.tokenizer.decode(&[t.id], false).unwrap_or_default(), t.logprob, g.tokenizer.is_control(t.id))).collect()
    } else {
        Vec::new()
    };
    Details {
        finish_reason: finish_reason(&c.summary.finish).into(),
        generated_tokens: generated_tokens(&c.summary),
        seed: p.seed,
        prefill,
        tokens,
        best_of_sequences: None,
        top_tokens: (p.top_n > 0).then(|| c.tokens.iter().map(|t| top_tokens(g, t)).collect()),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("the body must be a JSON object"));
    }
    Ok(v)
}

/// Run one request to the end: the response object and timing headers.
async fn run_one(s: &Shared, v: &Value, route: &str, started: Instant) -> Result<(GenerateResponse, Summary, usize), ApiError> {
    let p = parse_request(s, v).await?;
    let handle = s.engine.submit_images(p.req.clone(), p.images.clone(), p.places.clone()).map_err(|e| ApiError::from_submit(Flavor::Tgi, e))?;
    let c = collect(handle).await.map_err(|e| ApiError::new(Flavor::Tgi, StatusCode::FAILED_DEPENDENCY, "generation", e))?;
    finished(s, route, &c.summary, started);
    let g = s.engine.gemma();
    let generated_text = if p.full_text { format!("{}{}", p.inputs, c.text) } else { c.text.clone() };
    let out = GenerateResponse { generated_text, details: p.details.then(|| details(g, &p, &c)) };
    Ok((out, c.summary, c.text.len()))
}

fn respond(s: &Shared, route: &str, r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| {
        failed(s, route, e.status, &e.message);
        e.into_response()
    })
}

/// `POST /generate`.
#[utoipa::path(post, path = "/generate", tag = "TGI", request_body = GenerateRequest,
    responses((status = 200, description = "The generated text", body = GenerateResponse)))]
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
#[utoipa::path(post, path = "/generate_stream", tag = "TGI", request_body = GenerateRequest,
    responses((status = 200, description = "Server-sent events of `StreamResponse`, one per token", body = crate::schema::openai::ServerSentEvent, content_type = "text/event-stream")))]
pub async fn generate_stream(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    let r = async {
        let v = parse_body(&body)?;
        stream_response(&s, &v, started).await
    }
    .await;
    respond(&s, "/generate_stream", r)
}

async fn stream_response(s: &Shared, v: &Value, started: Instant) -> Result<Response, ApiError> {
    let p = parse_request(s, v).await?;
    if p.prefill_details {
        return Err(invalid("'decoder_input_details' is not supported when streaming tokens"));
    }
    let handle = s.engine.submit_images(p.req.clone(), p.images.clone(), p.places.clone()).map_err(|e| ApiError::from_submit(Flavor::Tgi, e))?;
    let (st, g) = (Arc::clone(s), Arc::clone(s.engine.gemma()));
    let prefix = if p.full_text { p.inputs.clone() } else { String::new() };
    let (seed, top_n, input_length) = (p.seed, p.top_n, p.req.prompt.len());
    // Token events lag one behind, so the last one can carry the final text.
    let mut pending: Option<TokenEvent> = None;
    let mut text = String::new();
    let mut index = 0usize;
    let event = move |index: usize, token: Token, top_tokens: Option<Vec<Token>>, generated_text: Option<String>, details: Option<StreamDetails>| {
        SseEvent::default().data(json!(StreamResponse { index, token, top_tokens, generated_text, details }).to_string())
    };
    let events = sse_stream(handle, move |ev| {
        let mut out = Vec::new();
        match ev {
            Event::Prompt(_) => {}
            Event::Token(t) => {
                if let Some(prev) = pending.replace(t) {
                    index += 1;
                    text.push_str(&prev.text);
                    let top = (top_n > 0).then(|| top_tokens(&g, &prev));
                    out.push(event(index, token(prev.id, &prev.text, prev.logprob, prev.special), top, None, None));
                }
            }
            Event::Done(sum) => {
                let details = StreamDetails {
                    finish_reason: finish_reason(&sum.finish).into(),
                    generated_tokens: generated_tokens(&sum),
                    input_length,
                    seed,
                };
                let stop = stop_token(&g, &sum.finish);
                if let Some(prev) = pending.take() {
                    index += 1;
                    text.push_str(&prev.text);
                    let top = (top_n > 0).then(|| top_tokens(&g, &prev));
                    let tok = token(
                        prev.id,
                        &format!("{}{}", prev.text, if stop.is_none() { sum.tail_text.as_str() } else { "" }),
                        prev.logprob,
                        prev.special,
                    );
                    if stop.is_some() {
                        out.push(event(index, tok, top, None, None));
                    } else {
                        text.push_str(&sum.tail_text);
                        out.push(event(index, tok, top, Some(format!("{prefix}{text}")), Some(details.clone())));
                    }
                }
                if let Some(stop) = stop {
                    index += 1;
                    text.push_str(&sum.tail_text);
                    out.push(event(index, stop, None, Some(format!("{prefix}{text}")), Some(details)));
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
#[utoipa::path(post, path = "/", tag = "TGI", request_body = GenerateRequest,
    responses((status = 200, description = "A list of one `/generate` answer, or with `stream` the events of `/generate_stream`",
        content((Vec<GenerateResponse> = "application/json"), (crate::schema::openai::ServerSentEvent = "text/event-stream")))))]
pub async fn compat(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    let r = async {
        let v = parse_body(&body)?;
        if typed::<GenerateRequest>(&v, Flavor::Tgi)?.stream.unwrap_or(false) {
            return stream_response(&s, &v, started).await;
        }
        let (out, summary, chars) = run_one(&s, &v, "/", started).await?;
        Ok((crate::timing_headers(&summary, started, chars), Json(vec![out])).into_response())
    }
    .await;
    respond(&s, "/", r)
}

/// `GET /info`.
#[utoipa::path(get, path = "/info", tag = "TGI", responses((status = 200, description = "The model and the server's limits", body = Info)))]
pub async fn info(State(s): State<Shared>) -> Json<Info> {
    let g = s.engine.gemma();
    let c = s.engine.config();
    Json(Info {
        model_id: s.config.model_id.clone(),
        model_sha: None,
        model_dtype: g.model.weights.dtype().to_string(),
        model_device_type: "cpu".into(),
        model_pipeline_tag: if g.takes_images() { "image-text-to-text" } else { "text-generation" }.into(),
        max_concurrent_requests: c.max_batch + c.max_queue,
        max_best_of: 1,
        max_stop_sequences: MAX_STOP,
        max_input_tokens: c.max_input_tokens,
        max_total_tokens: c.max_total_tokens.min(g.model.config.max_position_embeddings),
        max_batch_size: c.max_batch,
        max_new_tokens: s.config.max_new_tokens,
        prefill_chunk: c.prefill_chunk,
        max_client_batch_size: 8,
        validation_workers: 1,
        max_top_n_tokens: MAX_TOP_N,
        router: "gemma-rs".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        sha: None,
        docker_label: None,
    })
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
            predictions.push(r?.0.generated_text);
        }
        Ok(Json(json!({"predictions": predictions})).into_response())
    }
    .await;
    respond(&s, "vertex predict", r)
}
