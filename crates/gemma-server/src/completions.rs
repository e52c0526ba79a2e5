//! `POST /v1/completions`: the prompt as a string, a list of strings, a
//! list of token ids or a list of lists of token ids (one choice per prompt
//! × `n`, `index` in that order), and prompt scoring as lm-eval's
//! `local-completions` drives it: `echo: true` with `logprobs: N` returns the
//! prompt's tokens with their log-probabilities (first entry `null` when
//! nothing predicts it) and `N` alternatives per position (the argmax and
//! the actual token always among them), then the generated ones;
//! `max_tokens: 0` scores the prompt only.
//!
//! BOS: Gemma without `<bos>` is garbage, so a prompt (text or ids) that
//! does not start with BOS gets it prepended for the forward pass when the
//! tokenizer adds BOS; `echo` and its logprobs then cover exactly what the
//! client sent (the first sent token is scored given BOS). The request field
//! `add_special_tokens: false` (vLLM's name) opts out.

use crate::openai::{build_request, completion_logprobs, invalid, parse, piece, run_choices, token_ids, Choice, Kind};
use crate::schema::openai::{CompletionRequest, CompletionResponse};
use crate::schema::typed;
use crate::{failed, ApiError, Completed, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use gemma::Gemma;
use gemma_engine::PromptLogprob;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Most prompts in one request.
const MAX_PROMPTS: usize = 64;

/// `POST /v1/completions`.
#[utoipa::path(post, path = "/v1/completions", tag = "OpenAI", request_body = CompletionRequest,
    responses((status = 200, description = "The completion, or with `stream` server-sent events of `CompletionChunk` ending with `data: [DONE]`",
        content((CompletionResponse = "application/json"), (crate::schema::openai::ServerSentEvent = "text/event-stream")))))]
pub async fn completions(State(s): State<Shared>, body: Bytes) -> Response {
    s.metrics.request();
    let started = Instant::now();
    match completions_inner(&s, &body, started).await {
        Ok(r) => r,
        Err(e) => {
            failed(&s, "/v1/completions", e.status, &e.message);
            e.into_response()
        }
    }
}

/// One prompt: the ids the model sees, the index of the first id the
/// client sent (1 after an added BOS), and the client's text.
struct PromptIn {
    ids: Vec<u32>,
    from: usize,
    text: String,
}

fn with_bos(g: &Gemma, sent: Vec<u32>, add_special: bool) -> (Vec<u32>, usize) {
    let bos = g.tokenizer.bos_id;
    if add_special && g.tokenizer.add_bos && sent.first() != Some(&bos) {
        (std::iter::once(bos).chain(sent).collect(), 1)
    } else {
        (sent, 0)
    }
}

fn text_prompt(g: &Gemma, text: &str, add_special: bool) -> Result<PromptIn, ApiError> {
    if text.is_empty() {
        return Err(invalid("'prompt' must not be empty"));
    }
    let sent = g.tokenizer.encode(text, false).map_err(|e| invalid(e.to_string()))?;
    let (ids, from) = with_bos(g, sent, add_special);
    Ok(PromptIn { ids, from, text: text.to_string() })
}

fn ids_prompt(g: &Gemma, a: &[Value], which: usize, add_special: bool) -> Result<PromptIn, ApiError> {
    if a.is_empty() {
        return Err(invalid(format!("prompt {which} has no tokens")));
    }
    let sent = token_ids(g, a, &format!("prompt {which}, "))?;
    let text = g.tokenizer.decode(&sent, false).map_err(|e| invalid(e.to_string()))?;
    let (ids, from) = with_bos(g, sent, add_special);
    Ok(PromptIn { ids, from, text })
}

fn parse_prompts(g: &Gemma, prompt: &Value, add_special: bool) -> Result<Vec<PromptIn>, ApiError> {
    const SHAPES: &str = "'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids";
    let prompts = match prompt {
        Value::String(p) => vec![text_prompt(g, p, add_special)?],
        Value::Array(a) if a.is_empty() => return Err(invalid("'prompt' must not be empty")),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            a.iter().map(|p| text_prompt(g, p.as_str().unwrap_or_default(), add_special)).collect::<Result<_, _>>()?
        }
        Value::Array(a) if a.iter().all(Value::is_number) => vec![ids_prompt(g, a, 0, add_special)?],
        Value::Array(a) if a.iter().all(Value::is_array) => a
            .iter()
            .enumerate()
            .map(|(i, p)| ids_prompt(g, p.as_array().map_or(&[][..], Vec::as_slice), i, add_special))
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid(SHAPES)),
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(invalid(format!("at most {MAX_PROMPTS} prompts per request, got {}", prompts.len())));
    }
    Ok(prompts)
}

async fn completions_inner(s: &Shared, body: &Bytes, started: Instant) -> Result<Response, ApiError> {
    let v = parse(body)?;
    let g = s.engine.gemma();
    if v.get("suffix").is_some_and(|x| !x.is_null()) {
        return Err(invalid("'suffix' is not supported"));
    }
    // The flattened sampling fields first, so an error names its field.
    typed::<crate::schema::openai::SamplingParams>(&v, crate::Flavor::OpenAi)?;
    let c: CompletionRequest = typed(&v, crate::Flavor::OpenAi)?;
    let echo = c.echo.unwrap_or(false);
    let add_special = c.add_special_tokens.unwrap_or(true);
    let top = match c.logprobs {
        None => None,
        Some(n) if n as usize <= gemma::MAX_TOP_LOGPROBS => Some(n as usize),
        Some(n) => return Err(invalid(format!("'logprobs' must be an integer from 0 to {}, got {n}", gemma::MAX_TOP_LOGPROBS))),
    };
    if c.sampling.max_tokens == Some(0) && !echo {
        return Err(invalid("'max_tokens' must be at least 1 (0 only scores the prompt, with 'echo': true)"));
    }
    let n = c.sampling.n.unwrap_or(1) as usize;
    let mut choices = Vec::new();
    for p in parse_prompts(g, &c.prompt, add_special)? {
        let mut req = build_request(s, &v, &c.sampling, p.ids, Kind::Completion)?;
        req.logprobs = top.is_some();
        req.top_logprobs = top.unwrap_or(0);
        if echo && (top.is_some() || req.max_new_tokens == 0) {
            req.prompt_logprobs_from = Some(p.from);
        }
        for i in 0..n {
            let mut r = req.clone();
            r.params.seed = r.params.seed.wrapping_add(i as u64);
            choices.push(Choice { req: r, echo: echo.then(|| p.text.clone()), counts_prompt: i == 0, images: Vec::new(), places: Vec::new() });
        }
    }
    run_choices(s, &c.sampling, choices, Kind::Completion, started, None, None).await
}

/// The legacy logprobs of the scored prompt tokens, offsets from 0.
fn prompt_logprobs(g: &Gemma, scores: &[PromptLogprob]) -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>, usize) {
    let (mut toks, mut lps, mut tops, mut offs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0;
    for p in scores {
        let text = piece(g, p.id);
        offs.push(json!(offset));
        offset += text.len();
        lps.push(json!(p.logprob));
        tops.push(match p.logprob {
            None => Value::Null,
            Some(lp) => {
                let mut m: Map<String, Value> = p.top.iter().map(|a| (piece(g, a.id), json!(a.logprob))).collect();
                m.entry(text.clone()).or_insert(json!(lp));
                Value::Object(m)
            }
        });
        toks.push(json!(text));
    }
    (toks, lps, tops, offs, offset)
}

/// A completion choice with `echo`: the prompt text, then the completion;
/// logprobs over the prompt's tokens, then the generated ones.
pub(crate) fn echo_choice(g: &Gemma, index: usize, prompt: &str, c: &Completed, want_lp: bool, finish: &str) -> Value {
    let lp = if want_lp {
        let (mut toks, mut lps, mut tops, mut offs, _) = prompt_logprobs(g, &c.prompt);
        let gen = completion_logprobs(g, &c.tokens, prompt.len());
        for (out, key) in [(&mut toks, "tokens"), (&mut lps, "token_logprobs"), (&mut tops, "top_logprobs"), (&mut offs, "text_offset")] {
            out.extend(gen[key].as_array().cloned().unwrap_or_default());
        }
        json!({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
    } else {
        Value::Null
    };
    json!({"index": index, "text": format!("{prompt}{}", c.text), "logprobs": lp, "finish_reason": finish})
}
