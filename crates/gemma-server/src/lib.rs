//! `gemma serve`: OpenAI- and TGI-compatible HTTP routes over the
//! continuous-batching engine, with SSE streaming, Prometheus metrics,
//! optional bearer-key auth, body limits and graceful shutdown.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (with
//! prompt scoring: `echo` + `logprobs`), `GET /v1/models` (OpenAI);
//! `POST /generate`, `POST /generate_stream`, `POST /` (by `stream`),
//! `GET /info`, `GET /health` (TGI); `POST /tokenize` (vLLM's shape, or
//! TGI's for a body with `inputs`), `POST /detokenize`, `GET /tokenizer_info`
//! (vLLM: what lm-eval's remote tokenizer reads); `GET /metrics`; Vertex AI's `AIP_PREDICT_ROUTE` /
//! `AIP_HEALTH_ROUTE` when set; `GET /openapi.json` describes them all
//! (generated from the types in `schema`).

pub mod adapters;
mod completions;
mod grammar;
pub mod metrics;
mod openai;
pub mod openapi;
mod reasoning;
pub mod schema;
mod tgi;
mod chat_page;
mod embeddings;
mod images;
#[cfg(test)]
mod tool_call_goldens;
mod tokenizer_routes;

use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gemma_engine::{Engine, Event, Handle, Summary, TokenEvent};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name reported as the model id (`/v1/models`, `/info`, `model` fields).
    pub model_id: String,
    /// Required bearer key for every route but health (None: open).
    pub api_key: Option<String>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Vertex AI prediction route (`AIP_PREDICT_ROUTE`).
    pub predict_route: Option<String>,
    /// Vertex AI health route (`AIP_HEALTH_ROUTE`).
    pub health_route: Option<String>,
    /// Default `max_tokens` of a chat request that names none.
    pub max_new_tokens: usize,
    /// Models with a thinking mode (Gemma 4) think unless a request says
    /// otherwise (`reasoning_effort`, `chat_template_kwargs.enable_thinking`).
    pub enable_thinking: bool,
    /// Pan-and-scan for images of requests that do not say
    /// (`mm_processor_kwargs.do_pan_and_scan` overrides it).
    pub pan_and_scan: bool,
    /// Fetch remote `http(s)` image URLs (public addresses only); off: data: URLs only.
    pub image_urls: bool,
    /// Largest image accepted, in bytes.
    pub max_image_bytes: usize,
    /// Speculative decoding for requests that do not say (`"speculative":
    /// false` opts a request out, `true` in): the drafter and most tokens
    /// drafted per step. A request's `prediction` is drafted from either way.
    pub speculation: gemma::Speculation,
}

/// Default of [`ServerConfig::max_image_bytes`]: 20 MiB (OpenAI's limit).
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 20 << 20;

/// Default of [`ServerConfig::max_new_tokens`].
pub const DEFAULT_CHAT_MAX_NEW_TOKENS: usize = 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            model_id: "gemma".into(),
            api_key: None,
            max_body_bytes: 2 << 20,
            predict_route: None,
            health_route: None,
            max_new_tokens: DEFAULT_CHAT_MAX_NEW_TOKENS,
            enable_thinking: false,
            pan_and_scan: false,
            image_urls: false,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            speculation: gemma::Speculation::default(),
        }
    }
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The engine serving the model.
    pub engine: Arc<Engine>,
    /// Counters and histograms.
    pub metrics: metrics::Metrics,
    /// HTTP settings.
    pub config: ServerConfig,
    /// Named per-request LoRA adapters.
    pub adapters: adapters::Registry,
}

pub use adapters::valid_adapter_name;

/// Shared handler state.
pub type Shared = Arc<AppState>;

/// The application: all routes, auth, body limit.
pub fn router(state: Shared) -> Router {
    let mut r = Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/adapters", get(adapters::list).post(adapters::create))
        .route("/v1/adapters/{name}", axum::routing::delete(adapters::delete))
        .route("/generate", post(tgi::generate))
        .route("/generate_stream", post(tgi::generate_stream))
        .route("/", post(tgi::compat).get(chat_page::page))
        .route("/info", get(tgi::info))
        .route("/tokenize", post(tokenizer_routes::tokenize))
        .route("/detokenize", post(tokenizer_routes::detokenize))
        .route("/tokenizer_info", get(tokenizer_routes::tokenizer_info))
        .route("/health", get(health))
        .route("/metrics", get(metrics_route))
        .route("/openapi.json", get(openapi::openapi_json));
    if let Some(p) = &state.config.predict_route {
        r = r.route(p, post(tgi::vertex_predict));
    }
    if let Some(h) = &state.config.health_route {
        r = r.route(h, get(health));
    }
    r.layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Readiness: 200, or 503 once a drain has started.
#[utoipa::path(get, path = "/health", tag = "Server", responses((status = 200, description = "Serving"), (status = 503, description = "Draining: take this replica out of rotation")))]
async fn health(State(s): State<Shared>) -> StatusCode {
    if s.engine.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "Server", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics_route(State(s): State<Shared>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render(s.engine.stats(), &s.config.model_id))
}

/// Equal-length byte strings compared without early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With an API key set, every route but health and metrics needs `Authorization: Bearer KEY`.
async fn auth(State(s): State<Shared>, req: HttpRequest, next: Next) -> Response {
    let Some(key) = &s.config.api_key else { return next.run(req).await };
    let path = req.uri().path();
    // Health checks, metrics (as vLLM: what Prometheus and the inference
    // gateway's endpoint picker scrape, without credentials) and the chat
    // page (which asks the user for the key) are open.
    if path == "/health" || path == "/metrics" || s.config.health_route.as_deref() == Some(path) || (path == "/" && req.method() == axum::http::Method::GET) {
        return next.run(req).await;
    }
    let given = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if constant_time_eq(given.as_bytes(), key.as_bytes()) {
        return next.run(req).await;
    }
    let flavor = if path.starts_with("/v1/") { Flavor::OpenAi } else { Flavor::Tgi };
    ApiError::new(flavor, StatusCode::UNAUTHORIZED, "authentication", "missing or wrong API key (Authorization: Bearer KEY)").into_response()
}

/// Which API's error shape to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Flavor {
    OpenAi,
    Tgi,
}

/// An error response in the caller's API shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    flavor: Flavor,
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(flavor: Flavor, status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { flavor, status, kind, message: message.into() }
    }

    /// A request the API rejects (422 for TGI, 400 for OpenAI).
    pub(crate) fn invalid(flavor: Flavor, message: impl Into<String>) -> Self {
        let status = if flavor == Flavor::Tgi { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
        Self::new(flavor, status, "validation", message)
    }

    pub(crate) fn from_submit(flavor: Flavor, e: gemma_engine::SubmitError) -> Self {
        use gemma_engine::SubmitError::*;
        match e {
            Invalid(m) => Self::invalid(flavor, m),
            Overloaded { .. } => Self::new(flavor, StatusCode::TOO_MANY_REQUESTS, "overloaded", e.to_string()),
            ShuttingDown => Self::new(flavor, StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.flavor {
            Flavor::Tgi => serde_json::json!({"error": self.message, "error_type": self.kind}),
            Flavor::OpenAi => {
                let t = match self.status {
                    StatusCode::UNAUTHORIZED => "authentication_error",
                    StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
                    s if s.is_client_error() => "invalid_request_error",
                    _ => "server_error",
                };
                serde_json::json!({"error": {"message": self.message, "type": t, "param": null, "code": null}})
            }
        };
        (self.status, Json(body)).into_response()
    }
}

/// A finished generation, collected from its events.
#[derive(Debug)]
pub(crate) struct Completed {
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub summary: Summary,
    /// Prompt scores (when the request asked for them).
    pub prompt: Vec<gemma_engine::PromptLogprob>,
}

/// Wait for a request's events to end.
pub(crate) async fn collect(mut h: Handle) -> Result<Completed, String> {
    let (mut text, mut tokens, mut prompt) = (String::new(), Vec::new(), Vec::new());
    while let Some(ev) = h.events.recv().await {
        match ev {
            Event::Prompt(p) => prompt = p,
            Event::Token(t) => {
                text.push_str(&t.text);
                tokens.push(t);
            }
            Event::Done(s) => {
                text.push_str(&s.tail_text);
                return Ok(Completed { text, tokens, summary: s, prompt });
            }
            Event::Error(e) => return Err(e),
        }
    }
    Err("the engine stopped before the request finished".into())
}

/// Record a finished request in the metrics and the structured log.
pub(crate) fn finished(s: &AppState, route: &str, summary: &Summary, started: Instant) {
    let total = started.elapsed();
    s.metrics.finished(
        metrics::Finished {
            total: total.as_secs_f64(),
            queue: summary.queue_time.as_secs_f64(),
            inference: summary.inference_time.as_secs_f64(),
            ttft: summary.time_to_first_token.as_secs_f64(),
            input: summary.prompt_tokens,
            generated: summary.generated_tokens,
        },
        s.engine.stats().running.load(std::sync::atomic::Ordering::Relaxed) + 1,
    );
    eprintln!(
        "{}",
        serde_json::json!({
            "ts": unix_seconds(), "route": route, "status": 200, "prompt_tokens": summary.prompt_tokens, "cached_tokens": summary.cached_tokens,
            "generated_tokens": summary.generated_tokens, "finish": format!("{:?}", summary.finish),
            "queue_ms": ms(summary.queue_time), "ttft_ms": ms(summary.time_to_first_token), "total_ms": ms(total),
        })
    );
}

/// Log a failed request.
pub(crate) fn failed(s: &AppState, route: &str, status: StatusCode, message: &str) {
    s.metrics.failed();
    eprintln!("{}", serde_json::json!({"ts": unix_seconds(), "route": route, "status": status.as_u16(), "error": message}));
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// TGI's timing headers for a finished request.
pub(crate) fn timing_headers(summary: &Summary, started: Instant, chars: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    let total = started.elapsed();
    let per_token = if summary.generated_tokens > 0 { summary.inference_time / summary.generated_tokens as u32 } else { Duration::ZERO };
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-compute-type", "cpu".into());
    put("x-compute-time", format!("{:.3}", total.as_secs_f64()));
    put("x-compute-characters", chars.to_string());
    put("x-total-time", total.as_millis().to_string());
    put("x-validation-time", "0".into());
    put("x-queue-time", summary.queue_time.as_millis().to_string());
    put("x-inference-time", summary.inference_time.as_millis().to_string());
    put("x-time-per-token", per_token.as_millis().to_string());
    put("x-prompt-tokens", summary.prompt_tokens.to_string());
    put("x-generated-tokens", summary.generated_tokens.to_string());
    h
}

/// Serve `router(state)` on `listener` until `shutdown` resolves, then stop
/// accepting, let in-flight requests finish for up to `grace`, and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_draining(listener, state, shutdown, Duration::ZERO, grace).await
}

/// As [`serve`], with a drain phase first: when `shutdown` resolves,
/// `/health` answers 503 at once while requests are still accepted and
/// served for `drain_delay` (so a load balancer or Kubernetes takes the
/// replica out of rotation), then the listener closes and in-flight
/// requests get up to `grace` to finish.
pub async fn serve_draining(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain_delay: Duration,
    grace: Duration,
) -> std::io::Result<()> {
    let engine = Arc::clone(&state.engine);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        engine.begin_drain();
        if !drain_delay.is_zero() {
            eprintln!("{}", serde_json::json!({"ts": unix_seconds(), "event": "draining", "seconds": drain_delay.as_secs_f64()}));
            tokio::time::sleep(drain_delay).await;
        }
        engine.begin_shutdown();
        let _ = tx.send(());
    };
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(signal);
    let deadline = async move {
        let _ = rx.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r,
        _ = deadline => {
            eprintln!("{}", serde_json::json!({"ts": unix_seconds(), "event": "shutdown deadline reached; cancelling in-flight requests"}));
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
