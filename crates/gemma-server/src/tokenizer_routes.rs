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
use crate::schema::tgi::{DetokenizeRequest, DetokenizeResponse, TokenIds, TokenSpan, TokenizeRequest, TokenizeResponse, TokenizerInfo};
use crate::schema::typed;

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
#[utoipa::path(post, path = "/tokenize", tag = "Tokenizer", request_body = TokenizeRequest,
    responses((status = 200, description = "vLLM's ids, or TGI's spans for `inputs`", body = TokenizeResponse)))]
pub async fn tokenize(State(s): State<Shared>, body: Bytes) -> Response {
    let r = (|| {
        let v = parse(&body)?;
        let g = s.engine.gemma();
        let flavor = if v.get("inputs").is_some() { Flavor::Tgi } else { Flavor::OpenAi };
        let req: TokenizeRequest = typed(&v, flavor)?;
        if let Some(inputs) = &req.inputs {
            return Ok(Json(TokenizeResponse::Spans(tgi_tokens(g, inputs)?)).into_response());
        }
        let add_special = req.add_special_tokens.unwrap_or(true);
        let tokens = if let Some(p) = &req.prompt {
            g.tokenizer.encode(p, add_special && g.tokenizer.add_bos).map_err(|e| openai_invalid(e.to_string()))?
        } else if let Some(m) = &req.messages {
            let messages: Vec<ChatMessage> = m.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
            let add_gen = req.add_generation_prompt.unwrap_or(true);
            let text = g.tokenizer.apply_chat_template(&messages, add_gen).map_err(|e| openai_invalid(e.to_string()))?;
            g.tokenizer.encode(&text, add_special && g.tokenizer.add_bos).map_err(|e| openai_invalid(e.to_string()))?
        } else {
            return Err(openai_invalid("give 'prompt' (a string) or 'messages' (vLLM), or 'inputs' (TGI)"));
        };
        let max_model_len = s.engine.config().max_total_tokens.min(g.model.config.max_position_embeddings);
        Ok(Json(TokenizeResponse::Ids(TokenIds { count: tokens.len(), tokens, max_model_len })).into_response())
    })();
    respond(&s, "/tokenize", r)
}

/// TGI's tokenize: the prompt's tokens (BOS first) with byte offsets into
/// `inputs` (from incremental decoding; BOS has an empty span).
fn tgi_tokens(g: &Gemma, inputs: &str) -> Result<Vec<TokenSpan>, ApiError> {
    let ids = g.encode_prompt(inputs).map_err(|e| tgi_invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(ids.len());
    let mut prev_len = 0;
    let first = usize::from(ids.first() == Some(&g.tokenizer.bos_id));
    for (i, &id) in ids.iter().enumerate() {
        let piece = g.tokenizer.decode(&[id], false).unwrap_or_default();
        if i < first {
            out.push(TokenSpan { id, text: piece, start: 0, stop: 0 });
            continue;
        }
        let len = g.tokenizer.decode(&ids[first..=i], false).map(|t| t.len()).unwrap_or(prev_len);
        out.push(TokenSpan { id, text: piece, start: prev_len.min(inputs.len()), stop: len.min(inputs.len()) });
        prev_len = len;
    }
    Ok(out)
}

/// `POST /detokenize`: `{"tokens": [ids]}` → `{"prompt": text}` (control
/// tokens kept, so encode → decode round-trips).
#[utoipa::path(post, path = "/detokenize", tag = "Tokenizer", request_body = DetokenizeRequest,
    responses((status = 200, description = "The text", body = DetokenizeResponse)))]
pub async fn detokenize(State(s): State<Shared>, body: Bytes) -> Response {
    let r = (|| {
        let v = parse(&body)?;
        let g = s.engine.gemma();
        let req: DetokenizeRequest = typed(&v, Flavor::OpenAi)?;
        let ids = token_ids(g, &req.tokens, "")?;
        let prompt = g.tokenizer.decode(&ids, false).map_err(|e| openai_invalid(e.to_string()))?;
        Ok(Json(DetokenizeResponse { prompt }).into_response())
    })();
    respond(&s, "/detokenize", r)
}

/// `GET /tokenizer_info`: special tokens, chat template and limits.
#[utoipa::path(get, path = "/tokenizer_info", tag = "Tokenizer", responses((status = 200, description = "Special tokens, chat template and limits", body = TokenizerInfo)))]
pub async fn tokenizer_info(State(s): State<Shared>) -> Json<TokenizerInfo> {
    let g = s.engine.gemma();
    let t = &g.tokenizer;
    let pad = t.id_to_token(0).filter(|p| p == "<pad>");
    Json(TokenizerInfo {
        tokenizer_class: "GemmaTokenizer".into(),
        bos_token: t.bos_token.clone(),
        bos_token_id: t.bos_id,
        eos_token: t.eos_token.clone(),
        eos_token_id: t.token_to_id(&t.eos_token),
        pad_token_id: pad.as_ref().map(|_| 0),
        pad_token: pad,
        add_bos_token: t.add_bos,
        add_eos_token: false,
        chat_template: t.chat_template.source.clone(),
        vocab_size: t.vocab_size(),
        model_max_length: s.engine.config().max_total_tokens.min(g.model.config.max_position_embeddings),
        stop_token_ids: g.stop_ids(),
    })
}
