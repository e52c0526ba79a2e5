//! Tokenizer routes, so clients need no Hugging Face tokenizer download
//! (Gemma repositories are gated): vLLM's `POST /tokenize`,
//! `POST /detokenize` and `GET /tokenizer_info` — what lm-eval's remote
//! tokenizer calls — and TGI's `POST /tokenize` for a body with `inputs`.

use crate::openai::{invalid as openai_invalid, parse, token_ids};
use crate::{ApiError, Flavor, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gemma::{ChatMessage, Gemma};
use serde_json::{json, Value};

fn tgi_invalid(m: impl Into<String>) -> ApiError {
    ApiError::invalid(Flavor::Tgi, m)
}

fn respond(s: &Shared, route: &str, r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| {
        crate::failed(s, route, e.status, &e.message);
        e.into_response()
    })
}

/// `POST /tokenize`: `{"prompt", "add_special_tokens"?}` or
/// `{"messages", "add_generation_prompt"?}` → `{"tokens", "count",
/// "max_model_len"}` (vLLM); `{"inputs"}` → TGI's list of tokens with offsets.
pub async fn tokenize(State(s): State<Shared>, body: Bytes) -> Response {
    let r = (|| {
        let v = parse(&body)?;
        let g = s.engine.gemma();
        if let Some(inputs) = v.get("inputs") {
            let inputs = inputs.as_str().ok_or_else(|| tgi_invalid("'inputs' must be a string"))?;
            return Ok(Json(tgi_tokens(g, inputs)?).into_response());
        }
        let add_special = match v.get("add_special_tokens") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(openai_invalid("'add_special_tokens' must be a boolean")),
        };
        let tokens = if let Some(p) = v.get("prompt") {
            let p = p.as_str().ok_or_else(|| openai_invalid("'prompt' must be a string"))?;
            g.tokenizer.encode(p, add_special && g.tokenizer.add_bos).map_err(|e| openai_invalid(e.to_string()))?
        } else if let Some(m) = v.get("messages").and_then(Value::as_array) {
            let messages = m
                .iter()
                .map(|m| match (m.get("role").and_then(Value::as_str), m.get("content").and_then(Value::as_str)) {
                    (Some(r), Some(c)) => Ok(ChatMessage::new(r, c)),
                    _ => Err(openai_invalid("each message needs a string 'role' and 'content'")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let add_gen = v.get("add_generation_prompt").and_then(Value::as_bool).unwrap_or(true);
            let text = g.tokenizer.apply_chat_template(&messages, add_gen).map_err(|e| openai_invalid(e.to_string()))?;
            g.tokenizer.encode(&text, add_special && g.tokenizer.add_bos).map_err(|e| openai_invalid(e.to_string()))?
        } else {
            return Err(openai_invalid("give 'prompt' (a string) or 'messages' (vLLM), or 'inputs' (TGI)"));
        };
        let max_model_len = s.engine.config().max_total_tokens.min(g.model.config.max_position_embeddings);
        Ok(Json(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": max_model_len})).into_response())
    })();
    respond(&s, "/tokenize", r)
}

/// TGI's tokenize: the prompt's tokens (BOS first) with byte offsets into
/// `inputs` (from incremental decoding; BOS has an empty span).
fn tgi_tokens(g: &Gemma, inputs: &str) -> Result<Value, ApiError> {
    let ids = g.encode_prompt(inputs).map_err(|e| tgi_invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(ids.len());
    let mut prev_len = 0;
    let first = usize::from(ids.first() == Some(&g.tokenizer.bos_id));
    for (i, &id) in ids.iter().enumerate() {
        let piece = g.tokenizer.decode(&[id], false).unwrap_or_default();
        if i < first {
            out.push(json!({"id": id, "text": piece, "start": 0, "stop": 0}));
            continue;
        }
        let len = g.tokenizer.decode(&ids[first..=i], false).map(|t| t.len()).unwrap_or(prev_len);
        out.push(json!({"id": id, "text": piece, "start": prev_len.min(inputs.len()), "stop": len.min(inputs.len())}));
        prev_len = len;
    }
    Ok(Value::Array(out))
}

/// `POST /detokenize`: `{"tokens": [ids]}` → `{"prompt": text}` (control
/// tokens kept, so encode → decode round-trips).
pub async fn detokenize(State(s): State<Shared>, body: Bytes) -> Response {
    let r = (|| {
        let v = parse(&body)?;
        let g = s.engine.gemma();
        let tokens = v.get("tokens").and_then(Value::as_array).ok_or_else(|| openai_invalid("'tokens' (a list of token ids) is required"))?;
        let ids = token_ids(g, tokens, "")?;
        let text = g.tokenizer.decode(&ids, false).map_err(|e| openai_invalid(e.to_string()))?;
        Ok(Json(json!({"prompt": text})).into_response())
    })();
    respond(&s, "/detokenize", r)
}

/// `GET /tokenizer_info`: special tokens, chat template and limits.
pub async fn tokenizer_info(State(s): State<Shared>) -> Json<Value> {
    let g = s.engine.gemma();
    let t = &g.tokenizer;
    let pad = t.id_to_token(0).filter(|p| p == "<pad>");
    Json(json!({
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": t.bos_token, "bos_token_id": t.bos_id,
        "eos_token": t.eos_token, "eos_token_id": t.token_to_id(&t.eos_token),
        "pad_token": pad, "pad_token_id": pad.as_ref().map(|_| 0),
        "add_bos_token": t.add_bos, "add_eos_token": false,
        "chat_template": t.chat_template.source,
        "vocab_size": t.vocab_size(),
        "model_max_length": s.engine.config().max_total_tokens.min(g.model.config.max_position_embeddings),
        "stop_token_ids": g.stop_ids(),
    }))
}
