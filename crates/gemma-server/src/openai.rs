//! OpenAI API: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.
//!
//! Parameters left out take the model's defaults (`Gemma::request`: its
//! `generation_config.json`, greedy when it has none), as vLLM does.
//! `max_tokens` defaults to 16 on `/v1/completions` (OpenAI's and vLLM's
//! documented default) and to the server's `--max-new-tokens` on chat, both
//! within the remaining `max_total_tokens` budget. Presence and frequency
//! penalties count the generated tokens only. `n` (≤ 8) choices run as
//! separate sequences with seeds `seed, seed+1, …`. Prompt scoring (`echo`)
//! is in `completions.rs`.

use crate::reasoning::ThinkingSyntax;
use crate::schema::openai::{ChatCompletionRequest, CompletionResponse, ModelCard, ModelList, SamplingParams, Stop, Usage};
use crate::schema::typed;
use crate::{collect, failed, finished, ApiError, Flavor, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use gemma::Gemma;
use gemma_engine::{Event, FinishReason, Handle, Request, TokenEvent};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Instant;

/// `GET /v1/models`.
/// The base model, then each loaded adapter (requests name one as `model`).
#[utoipa::path(get, path = "/v1/models", tag = "OpenAI", responses((status = 200, description = "The base model, then each loaded adapter", body = ModelList)))]
pub async fn models(State(s): State<Shared>) -> Json<ModelList> {
    let modalities: Vec<String> = if s.engine.gemma().takes_images() { vec!["text".into(), "image".into()] } else { vec!["text".into()] };
    let card = |id: &str, parent: Option<&str>| ModelCard {
        id: id.into(),
        object: "model".into(),
        created: 0,
        owned_by: "gemma-rs".into(),
        parent: parent.map(String::from),
        input_modalities: modalities.clone(),
    };
    let mut data = vec![card(&s.config.model_id, None)];
    data.extend(s.adapters.names().iter().map(|name| card(name, Some(&s.config.model_id))));
    Json(ModelList { object: "list".into(), data })
}

/// Most choices per request (`n`); they run as separate sequences in the batch.
pub(crate) const MAX_N: usize = 8;
/// OpenAI's default `max_tokens` on `/v1/completions`.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;
/// Most stop strings (OpenAI allows 4; lm-eval adds EOS to a task's own).
const MAX_STOP: usize = 16;

pub(crate) fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::invalid(Flavor::OpenAi, m)
}

pub(crate) fn parse(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("the body must be a JSON object"));
    }
    Ok(v)
}

/// Token ids of this model from a JSON list; errors name `what` and the index.
pub(crate) fn token_ids(g: &Gemma, list: &[Value], what: &str) -> Result<Vec<u32>, ApiError> {
    let vocab = g.model.config.vocab_size;
    list.iter()
        .enumerate()
        .map(|(i, x)| match x.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            _ => Err(invalid(format!("{what}token {i}: {x} is not a token id of this model (0 to {})", vocab - 1))),
        })
        .collect()
}

/// Sampling, limits and stops common to both endpoints.
pub(crate) fn build_request(s: &Shared, v: &Value, sp: &SamplingParams, prompt: Vec<u32>, kind: Kind) -> Result<Request, ApiError> {
    let g: &Gemma = s.engine.gemma();
    // Features a client relies on are refused rather than silently ignored.
    let refused: &[&str] =
        if kind == Kind::Chat { &["functions", "logit_bias", "best_of"] } else { &["tools", "functions", "logit_bias", "best_of"] };
    for &key in refused {
        let set = match v.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(Value::Number(n)) => n.as_u64() != Some(1),
            Some(_) => true,
        };
        if set {
            return Err(invalid(format!("'{key}' is not supported by gemma-rs")));
        }
    }
    let grammar = crate::grammar::openai_response_format(v).map_err(invalid)?;
    if let Some(n) = sp.n {
        if !(1..=MAX_N as u64).contains(&n) {
            return Err(invalid(format!("n = {n} is not supported: n must be between 1 and {MAX_N}")));
        }
    }
    let budget = s.engine.config().max_total_tokens.min(g.model.config.max_position_embeddings).saturating_sub(prompt.len());
    let default_max = match kind {
        Kind::Completion => COMPLETIONS_DEFAULT_MAX_TOKENS,
        Kind::Chat => s.config.max_new_tokens,
    };
    let max = sp.max_completion_tokens.or(sp.max_tokens).map_or(default_max.min(budget).max(1), |m| m as usize);
    // The one set of defaults (generation_config.json), then the request's values.
    let mut req = g.request(&prompt);
    req.max_new_tokens = max;
    let mut p = req.params.clone();
    if let Some(t) = sp.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(invalid(format!("temperature must be in [0, 2], got {t}")));
        }
        p.temperature = t as f32;
    }
    if let Some(t) = sp.top_p {
        p.top_p = t as f32;
    }
    if let Some(k) = sp.top_k {
        p.top_k = k as usize;
    }
    p.seed = sp.seed.map_or(crate::unix_seconds() ^ 0x9E37_79B9_7F4A_7C15, |s| s as u64);
    req.params = p;
    req.presence_penalty = sp.presence_penalty.unwrap_or(0.0) as f32;
    req.frequency_penalty = sp.frequency_penalty.unwrap_or(0.0) as f32;
    req.stop_strings = sp.stop.as_ref().map(Stop::strings).unwrap_or_default();
    if req.stop_strings.len() > MAX_STOP || req.stop_strings.iter().any(String::is_empty) {
        return Err(invalid(format!("'stop' takes at most {MAX_STOP} non-empty strings")));
    }
    if let Some(gr) = grammar {
        req.constraint = Some(crate::grammar::compile(s, &gr).map_err(invalid)?);
    }
    // `model` naming a loaded adapter picks it; any other name means the
    // base model (clients send arbitrary names by habit, as TGI and
    // llama-server accept).
    req.adapter = sp.model.as_deref().and_then(|m| s.adapters.get(m));
    req.speculation = s.config.speculation.clone();
    match sp.speculative {
        Some(false) => req.speculation.mode = gemma::SpecMode::Off,
        Some(true) if req.speculation.mode == gemma::SpecMode::Off => req.speculation.mode = gemma::SpecMode::Ngram,
        _ => {}
    }
    if let Some(p) = &sp.prediction {
        let text = p.text().map_err(invalid)?;
        if sp.speculative != Some(false) {
            req.speculation.prediction = g.tokenizer.encode(&text, false).map_err(|e| invalid(e.to_string()))?;
        }
    }
    Ok(req)
}

/// A streamed answer held back while it may be a tool call.
#[derive(Debug, Default, Clone)]
struct Held {
    /// The text with control tokens spelled out (what calls are parsed from).
    spelled: String,
    /// The text as it would have streamed.
    text: String,
    /// The held tokens' logprobs entries (when asked for).
    logprobs: Vec<Value>,
}

/// A token's text with control tokens spelled out (tool calls written
/// with control tokens are parsed from it).
fn tool_text<'a>(g: &Gemma, t: &'a gemma_engine::TokenEvent) -> std::borrow::Cow<'a, str> {
    tool_text_of(&g.tokenizer, t)
}

/// [`tool_text`] with the tokenizer alone.
pub(crate) fn tool_text_of<'a>(tok: &gemma::GemmaTokenizer, t: &'a gemma_engine::TokenEvent) -> std::borrow::Cow<'a, str> {
    if t.special {
        std::borrow::Cow::Owned(tok.id_to_token(t.id).unwrap_or_default())
    } else {
        std::borrow::Cow::Borrowed(&t.text)
    }
}

/// OpenAI's finish reason of an answer that is a call: `tool_calls` for
/// `auto` and `required`, `stop` for a named function.
fn call_finish(t: &gemma::tools::Tools, fr: &str) -> &'static str {
    match (&t.choice, fr) {
        (_, "length") => "length",
        (gemma::tools::ToolChoice::Named(_), _) => "stop",
        _ => "tool_calls",
    }
}

pub(crate) fn finish_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::StopToken(_) | FinishReason::StopString(_) | FinishReason::Cancelled => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

/// A token's text for logprobs (control tokens included).
pub(crate) fn piece(g: &Gemma, id: u32) -> String {
    g.tokenizer.decode(&[id], false).unwrap_or_default()
}

/// Chat-format logprobs of one token.
fn chat_logprob(g: &Gemma, t: &TokenEvent) -> Value {
    let entry = |id: u32, lp: f32| {
        let tok = piece(g, id);
        json!({"token": tok, "logprob": lp, "bytes": tok.as_bytes()})
    };
    let mut e = entry(t.id, t.logprob.unwrap_or(0.0));
    e["top_logprobs"] = Value::Array(t.top.iter().map(|a| entry(a.id, a.logprob)).collect());
    e
}

/// Legacy completions-format logprobs of a run of tokens.
pub(crate) fn completion_logprobs(g: &Gemma, tokens: &[TokenEvent], offset0: usize) -> Value {
    let mut offset = offset0;
    let (mut toks, mut lps, mut tops, mut offs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in tokens {
        let p = piece(g, t.id);
        offs.push(offset);
        offset += t.text.len();
        toks.push(p);
        lps.push(t.logprob);
        tops.push(t.top.iter().map(|a| (piece(g, a.id), json!(a.logprob))).collect::<serde_json::Map<_, _>>());
    }
    json!({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
}

/// SSE events mapped from a request's engine events. Dropping the stream
/// (the client went away) drops the handle, which cancels the request.
pub(crate) fn sse_stream<F>(handle: Handle, map: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnMut(Event) -> Vec<SseEvent> + Send + 'static,
{
    struct St<F> {
        h: Option<Handle>,
        queue: std::collections::VecDeque<SseEvent>,
        map: F,
    }
    stream::unfold(St { h: Some(handle), queue: Default::default(), map }, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some((Ok(ev), st));
            }
            let h = st.h.as_mut()?;
            match h.events.recv().await {
                Some(ev) => {
                    let end = matches!(ev, Event::Done(_) | Event::Error(_));
                    let evs = (st.map)(ev);
                    st.queue.extend(evs);
                    if end {
                        st.h = None;
                    }
                }
                None => st.h = None,
            }
        }
    })
}

fn data(v: Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "OpenAI", request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion, or with `stream` server-sent events of `CompletionChunk` ending with `data: [DONE]`",
            content((CompletionResponse = "application/json"), (crate::schema::openai::ServerSentEvent = "text/event-stream"))),
    ))]
pub async fn chat(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    match chat_inner(&s, &body, started).await {
        Ok(r) => r,
        Err(e) => {
            failed(&s, "/v1/chat/completions", e.status, &e.message);
            e.into_response()
        }
    }
}

async fn chat_inner(s: &Shared, body: &Bytes, started: Instant) -> Result<Response, ApiError> {
    let v = parse(body)?;
    // The flattened sampling fields first: serde loses the field name of an
    // error inside a flattened struct, this names it.
    typed::<SamplingParams>(&v, Flavor::OpenAi)?;
    let chat: ChatCompletionRequest = typed(&v, Flavor::OpenAi)?;
    let g = s.engine.gemma();
    // The template renders the messages as sent (typed above for validation).
    let msgs = v.get("messages").and_then(Value::as_array).ok_or_else(|| invalid("'messages' (an array) is required"))?;
    if chat.messages.is_empty() {
        return Err(invalid("'messages' must not be empty"));
    }
    let tools = gemma::tools::parse(&v, gemma::call_syntax::CallSyntax::detect(&g.tokenizer)).map_err(invalid)?;
    // Thinking (Gemma 4): decided before the prompt, which the template writes with or without it.
    let syntax = crate::reasoning::ThinkingSyntax::detect(g);
    let constrained =
        crate::grammar::openai_response_format(&v).map_err(invalid)?.is_some() || tools.as_ref().is_some_and(|t| t.active() && t.grammar().is_some());
    let (thinking, kwargs) = crate::reasoning::template_kwargs(&v, s.config.enable_thinking, syntax, constrained).map_err(invalid)?;
    // Image parts become the model's image marks in the rendered text, their URLs collected in order.
    let boi = g.vision.as_ref().and_then(|v| g.tokenizer.id_to_token(v.spec.mark_token()));
    let urls = std::cell::RefCell::new(Vec::new());
    let text = gemma::tools::prompt_text(g, msgs, tools.as_ref(), &|c| crate::images::content_text(c, boi.as_deref(), &urls), &kwargs).map_err(invalid)?;
    let urls = urls.into_inner();
    let (prompt, images, places) = if urls.is_empty() {
        (g.tokenizer.encode(&text, g.tokenizer.add_bos).map_err(|e| invalid(e.to_string()))?, Vec::new(), Vec::new())
    } else {
        let pas = crate::images::pan_and_scan(&v, s.config.pan_and_scan)?;
        let images = crate::images::prepare(s, urls, pas).await?;
        let slots: Vec<gemma::vision::ImageSlot> = images.iter().map(|im| im.slot()).collect();
        let (ids, places) = g.image_prompt(&text, &slots).map_err(|e| invalid(e.to_string()))?;
        (ids, images, places)
    };
    let mut req = build_request(s, &v, &chat.sampling, prompt, Kind::Chat)?;
    let tools = tools.filter(|t| t.active());
    if let Some(t) = &tools {
        if req.constraint.is_some() {
            return Err(invalid("'response_format' and 'tools' cannot be used together"));
        }
        if let Some(gr) = t.grammar() {
            req.constraint = Some(crate::grammar::compile(s, &gr).map_err(invalid)?);
        }
    }
    req.logprobs = chat.logprobs.unwrap_or(false);
    req.top_logprobs = chat.top_logprobs.unwrap_or(0) as usize;
    if req.top_logprobs > 0 && !req.logprobs {
        return Err(invalid("'top_logprobs' needs 'logprobs': true"));
    }
    let n = chat.sampling.n.unwrap_or(1) as usize;
    let choices = (0..n)
        .map(|i| {
            let mut r = req.clone();
            r.params.seed = r.params.seed.wrapping_add(i as u64);
            Choice { req: r, echo: None, counts_prompt: i == 0, images: images.clone(), places: places.clone() }
        })
        .collect();
    run_choices(s, &chat.sampling, choices, Kind::Chat, started, tools.map(std::sync::Arc::new), syntax.map(|syn| (syn, thinking))).await
}

/// Which endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn route(self) -> &'static str {
        match self {
            Kind::Chat => "/v1/chat/completions",
            Kind::Completion => "/v1/completions",
        }
    }
}

/// One choice of a response: its request and, for `echo`, the prompt text
/// shown before the completion (with its scores).
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub req: Request,
    pub echo: Option<String>,
    /// Whether its prompt counts in `usage` (the first choice of each prompt).
    pub counts_prompt: bool,
    /// Images of the prompt (encoded by the engine) and where their runs go.
    pub images: Vec<gemma::vision::PreparedImage>,
    pub places: Vec<gemma::vision::ImagePlace>,
}

/// Submit every choice and answer with them in order, collected or streamed.
/// With `tools`, an answer that is a call becomes `message.tool_calls`; with
/// `thinking` (the model's syntax, and whether the request thinks) a thought
/// becomes `reasoning_content`.
pub(crate) async fn run_choices(
    s: &Shared,
    sp: &SamplingParams,
    choices: Vec<Choice>,
    kind: Kind,
    started: Instant,
    tools: Option<std::sync::Arc<gemma::tools::Tools>>,
    thinking: Option<(ThinkingSyntax, bool)>,
) -> Result<Response, ApiError> {
    let g = std::sync::Arc::clone(s.engine.gemma());
    let n = choices.len();
    let want_lp = choices.first().is_some_and(|c| c.req.logprobs);
    let stream = sp.stream.unwrap_or(false);
    let include_usage = sp.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    let mut handles = Vec::with_capacity(n);
    let echoes: Vec<Option<String>> = choices.iter().map(|c| c.echo.clone()).collect();
    let counts_prompt: Vec<bool> = choices.iter().map(|c| c.counts_prompt).collect();
    let prompts: Vec<Vec<u32>> = if thinking.is_some() { choices.iter().map(|c| c.req.prompt.clone()).collect() } else { Vec::new() };
    if stream && echoes.iter().any(Option::is_some) {
        return Err(invalid("'echo' is not supported with 'stream'"));
    }
    for c in choices {
        // On a refusal the handles already taken are dropped, which cancels them.
        handles.push(s.engine.submit_images(c.req, c.images, c.places).map_err(|e| ApiError::from_submit(Flavor::OpenAi, e))?);
    }
    let id = format!("{}-{}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, handles[0].id);
    let handle_ids: Vec<u64> = handles.iter().map(|h| h.id).collect();
    let created = crate::unix_seconds();
    let model = s.config.model_id.clone();
    let object = if kind == Kind::Chat { "chat.completion" } else { "text_completion" };
    if !stream {
        let all = futures_util::future::join_all(handles.into_iter().map(collect)).await;
        let mut choices = Vec::with_capacity(n);
        let (mut prompt_tokens, mut completion_tokens, mut cached_tokens, mut chars) = (0, 0, 0, 0);
        let (mut drafted, mut accepted) = (0, 0);
        let mut last = None;
        for (i, c) in all.into_iter().enumerate() {
            let c = c.map_err(|e| ApiError::new(Flavor::OpenAi, StatusCode::INTERNAL_SERVER_ERROR, "generation", e))?;
            finished(s, kind.route(), &c.summary, started);
            if counts_prompt[i] {
                prompt_tokens += c.summary.prompt_tokens;
                cached_tokens += c.summary.cached_tokens;
            }
            completion_tokens += c.summary.generated_tokens;
            drafted += c.summary.drafted_tokens;
            accepted += c.summary.accepted_tokens;
            chars += c.text.len();
            let fr = finish_reason(&c.summary.finish);
            choices.push(match kind {
                Kind::Chat => {
                    // The thought apart; the reply is what tool calls are parsed from.
                    let (reasoning, tokens, tail, text) = match thinking {
                        Some((syn, _)) => {
                            let (mut r, toks, open) = crate::reasoning::split_all(syn, &prompts[i], &c.tokens);
                            let tail = if open {
                                r.push_str(c.summary.tail_text.trim_end());
                                String::new()
                            } else {
                                c.summary.tail_text.clone()
                            };
                            let text = toks.iter().map(|t| t.text.as_str()).collect::<String>() + &tail;
                            (r, toks, tail, text)
                        }
                        None => (String::new(), c.tokens.clone(), c.summary.tail_text.clone(), c.text.clone()),
                    };
                    let lp = if want_lp { json!({"content": tokens.iter().map(|t| chat_logprob(&g, t)).collect::<Vec<_>>()}) } else { Value::Null };
                    let spelled: String = tokens.iter().map(|t| tool_text(&g, t)).collect::<String>() + &tail;
                    let mut choice = match tools.as_ref().and_then(|t| t.parse_calls(&spelled).map(|calls| (t, calls))) {
                        Some((t, calls)) => json!({"index": i, "message": {"role": "assistant", "content": null,
                            "tool_calls": gemma::tools::tool_calls_json(&calls, handle_ids[i])}, "logprobs": lp, "finish_reason": call_finish(t, fr)}),
                        None => json!({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": lp, "finish_reason": fr}),
                    };
                    if thinking.is_some_and(|(_, on)| on) || !reasoning.is_empty() {
                        choice["message"]["reasoning_content"] = if reasoning.is_empty() { Value::Null } else { json!(reasoning) };
                    }
                    choice
                }
                Kind::Completion => match &echoes[i] {
                    Some(prompt) => crate::completions::echo_choice(&g, i, prompt, &c, want_lp, fr),
                    None => {
                        let lp = if want_lp { completion_logprobs(&g, &c.tokens, 0) } else { Value::Null };
                        json!({"index": i, "text": c.text, "logprobs": lp, "finish_reason": fr})
                    }
                },
            });
            last = Some(c.summary);
        }
        let body = CompletionResponse {
            id,
            object: object.into(),
            created,
            model,
            system_fingerprint: None,
            choices,
            usage: Usage::new(prompt_tokens, completion_tokens, cached_tokens).with_drafts(drafted, accepted),
        };
        let headers = last.map(|sum| crate::timing_headers(&sum, started, chars)).unwrap_or_default();
        return Ok((headers, Json(body)).into_response());
    }
    // Streaming: the choices' events interleave as they come; each chunk names its choice.
    let object = if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
    let chunk = move |i: usize, body: Value| {
        let mut choice = body;
        choice["index"] = json!(i);
        let mut c = json!({"id": id, "object": object, "created": created, "model": model, "system_fingerprint": null, "choices": [choice]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let st = std::sync::Arc::clone(s);
    let mut started_choice = vec![false; n];
    let (mut done, mut prompt_tokens, mut completion_tokens, mut cached_tokens) = (0, 0, 0, 0);
    let (mut drafted, mut accepted) = (0, 0);
    let mut offsets = vec![0usize; n];
    // With tools: text held back per choice while it may be a call (`None`:
    // known to be plain text).
    let mut held: Vec<Option<Held>> = vec![tools.as_ref().map(|_| Held::default()); n];
    // With a thinking syntax: each choice's thought split off as it streams.
    let mut splitters: Vec<Option<crate::reasoning::Splitter>> =
        (0..n).map(|i| thinking.filter(|_| kind == Kind::Chat).map(|(syn, _)| crate::reasoning::Splitter::new(syn, &prompts[i]))).collect();
    let tagged = handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| Box::pin(stream::unfold(h, |mut h| async move { h.events.recv().await.map(|e| (e, h)) }).map(move |e| (i, e))));
    let merged = stream::select_all(tagged);
    let events = merged.flat_map(move |(i, ev)| {
        let mut out = Vec::new();
        if kind == Kind::Chat && !started_choice[i] {
            started_choice[i] = true;
            out.push(data(chunk(i, json!({"delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))));
        }
        match ev {
            Event::Prompt(_) => {}
            Event::Token(t) => {
                let t = match splitters[i].as_mut().map(|sp| sp.push(&t)) {
                    None => Some(t),
                    Some(crate::reasoning::Piece::Content(c)) => Some(c),
                    Some(crate::reasoning::Piece::Reasoning(r)) => {
                        out.push(data(chunk(i, json!({"delta": {"reasoning_content": r}, "logprobs": null, "finish_reason": null}))));
                        None
                    }
                    Some(crate::reasoning::Piece::Skip) => None,
                };
                if let Some(t) = t {
                    if kind == Kind::Chat && held[i].is_some() {
                        let h = held[i].as_mut().expect("checked");
                        h.spelled.push_str(&tool_text(&g, &t));
                        h.text.push_str(&t.text);
                        if want_lp {
                            h.logprobs.push(chat_logprob(&g, &t));
                        }
                        let t_ref = tools.as_ref().expect("held only with tools");
                        if !h.spelled.trim().is_empty() && !t_ref.may_be_call(&h.spelled) {
                            // Plain text after all: release what was held, with its logprobs.
                            let h = held[i].take().expect("checked");
                            let lp = if want_lp { json!({"content": h.logprobs}) } else { Value::Null };
                            out.push(data(chunk(i, json!({"delta": {"content": h.text}, "logprobs": lp, "finish_reason": null}))));
                        }
                    } else if !t.text.is_empty() || want_lp {
                            out.push(data(chunk(
                                i,
                                match kind {
                                    Kind::Chat => {
                                        let lp = if want_lp { json!({"content": [chat_logprob(&g, &t)]}) } else { Value::Null };
                                        json!({"delta": {"content": t.text}, "logprobs": lp, "finish_reason": null})
                                    }
                                    Kind::Completion => {
                                        let lp = if want_lp { completion_logprobs(&g, std::slice::from_ref(&t), offsets[i]) } else { Value::Null };
                                        offsets[i] += t.text.len();
                                        json!({"text": t.text, "logprobs": lp, "finish_reason": null})
                                    }
                                },
                            )));
                    }
                }
            }
            Event::Done(sum) => {
                let fr = json!(finish_reason(&sum.finish));
                // Text released at the end belongs to the thought if it never closed.
                let tail_text = match &splitters[i] {
                    Some(sp) if sp.tail_in_thought() => {
                        let r = sum.tail_text.trim_end();
                        if !r.is_empty() {
                            out.push(data(chunk(i, json!({"delta": {"reasoning_content": r}, "logprobs": null, "finish_reason": null}))));
                        }
                        String::new()
                    }
                    _ => sum.tail_text.clone(),
                };
                let h = held[i].take();
                let calls = h.as_ref().and_then(|h| tools.as_ref().and_then(|t| t.parse_calls(&(h.spelled.clone() + &tail_text)).map(|c| (t, c))));
                match kind {
                    Kind::Chat if calls.is_some() => {
                        let (t, calls) = calls.expect("checked");
                        for (k, c) in gemma::tools::tool_calls_json(&calls, handle_ids[i]).as_array().expect("a list").iter().enumerate() {
                            // The name first, then the arguments in fragments (as OpenAI streams them).
                            let mut head = c.clone();
                            head["index"] = json!(k);
                            head["function"]["arguments"] = json!("");
                            out.push(data(chunk(i, json!({"delta": {"tool_calls": [head]}, "logprobs": null, "finish_reason": null}))));
                            let args = c["function"]["arguments"].as_str().unwrap_or("");
                            for frag in gemma::tools::fragments(args, 16) {
                                out.push(data(chunk(i, json!({"delta": {"tool_calls": [{"index": k, "function": {"arguments": frag}}]}, "logprobs": null, "finish_reason": null}))));
                            }
                        }
                        out.push(data(chunk(i, json!({"delta": {}, "logprobs": null, "finish_reason": call_finish(t, fr.as_str().unwrap_or("stop"))}))));
                    }
                    Kind::Chat => {
                        let (tail, lps) = match h {
                            Some(h) => (h.text + &tail_text, h.logprobs),
                            None => (tail_text.clone(), Vec::new()),
                        };
                        if !tail.is_empty() || !lps.is_empty() {
                            let lp = if want_lp && !lps.is_empty() { json!({"content": lps}) } else { Value::Null };
                            out.push(data(chunk(i, json!({"delta": {"content": tail}, "logprobs": lp, "finish_reason": null}))));
                        }
                        out.push(data(chunk(i, json!({"delta": {}, "logprobs": null, "finish_reason": fr}))));
                    }
                    Kind::Completion => out.push(data(chunk(i, json!({"text": sum.tail_text, "logprobs": null, "finish_reason": fr})))),
                }
                if counts_prompt[i] {
                    prompt_tokens += sum.prompt_tokens;
                    cached_tokens += sum.cached_tokens;
                }
                completion_tokens += sum.generated_tokens;
                drafted += sum.drafted_tokens;
                accepted += sum.accepted_tokens;
                finished(&st, kind.route(), &sum, started);
                done += 1;
            }
            Event::Error(e) => {
                failed(&st, kind.route(), StatusCode::INTERNAL_SERVER_ERROR, &e);
                out.push(data(json!({"error": {"message": e, "type": "server_error", "param": null, "code": null}})));
                done += 1;
            }
        }
        if done == n {
            if include_usage {
                let mut u = chunk(0, json!({}));
                u["choices"] = json!([]);
                u["usage"] = json!(Usage::new(prompt_tokens, completion_tokens, cached_tokens).with_drafts(drafted, accepted));
                out.push(data(u));
            }
            out.push(SseEvent::default().data("[DONE]"));
            done += 1; // emit the end once
        }
        stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
