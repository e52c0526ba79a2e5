//! OpenAI `POST /v1/embeddings`: `input` as a string, a list of strings, a
//! list of token ids or a list of such lists; `dimensions` (Matryoshka
//! truncation, renormalized); `encoding_format` `float` or `base64`
//! (little-endian f32, as the openai client decodes it). Extra field
//! `prompt_name` picks one of the model's prompts (EmbeddingGemma:
//! `query`, `document`, …). Texts are tokenized here and embedded by the
//! engine, which batches the texts of all waiting requests into shared
//! passes between generation steps.

use crate::openai::{invalid, parse};
use crate::{ApiError, Flavor, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use gemma::EmbedOptions;
use crate::schema::openai::{Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage, EmbeddingVector, EncodingFormat};
use crate::schema::typed;
use serde_json::Value;

/// Most inputs in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// The route.
#[utoipa::path(post, path = "/v1/embeddings", tag = "OpenAI", request_body = EmbeddingRequest,
    responses((status = 200, description = "One embedding per input", body = EmbeddingList)))]
pub async fn embeddings(State(s): State<Shared>, body: Bytes) -> Result<Json<EmbeddingList>, ApiError> {
    let v = parse(&body)?;
    let req: EmbeddingRequest = typed(&v, Flavor::OpenAi)?;
    let g = std::sync::Arc::clone(s.engine.gemma());
    let texts: Vec<String> = match &req.input {
        Value::String(t) => vec![t.clone()],
        Value::Array(a) if a.is_empty() => return Err(invalid("'input' must not be empty")),
        Value::Array(a) if a.iter().all(Value::is_string) => a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect(),
        Value::Array(a) if a.iter().all(Value::is_u64) => vec![ids_text(&g, a)?],
        Value::Array(a) if a.iter().all(Value::is_array) => a.iter().map(|x| ids_text(&g, x.as_array().map_or(&[][..], |v| v))).collect::<Result<_, _>>()?,
        _ => return Err(invalid("'input' must be a string, a list of strings, a list of token ids or a list of such lists")),
    };
    if texts.len() > MAX_INPUTS {
        return Err(invalid(format!("'input' has {} items; at most {MAX_INPUTS}", texts.len())));
    }
    let dimensions = match req.dimensions {
        None => None,
        Some(0) => return Err(invalid("'dimensions' must be a positive integer")),
        Some(d) => Some(d as usize),
    };
    let base64 = req.encoding_format == Some(EncodingFormat::Base64);
    let prompt_name = req.prompt_name;
    let opts = EmbedOptions { prompt_name, dimensions, ..Default::default() };
    let model = s.config.model_id.clone();
    let g2 = std::sync::Arc::clone(&g);
    let inputs = tokio::task::spawn_blocking(move || g2.embed_inputs(&texts, &opts))
        .await
        .map_err(|e| ApiError::new(Flavor::OpenAi, StatusCode::INTERNAL_SERVER_ERROR, "embedding", e.to_string()))?
        .map_err(|e| invalid(e.to_string()))?;
    let handle = s.engine.embed(inputs, dimensions).map_err(|e| ApiError::from_submit(Flavor::OpenAi, e))?;
    let out = handle.wait().await.map_err(|e| ApiError::new(Flavor::OpenAi, StatusCode::INTERNAL_SERVER_ERROR, "embedding", e))?;
    let tokens: usize = out.iter().map(|e| e.tokens).sum();
    let data = out
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|f| f.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingVector::Float(e.values)
            };
            Embedding { object: "embedding".into(), index, embedding }
        })
        .collect();
    Ok(Json(EmbeddingList { object: "list".into(), data, model, usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens } }))
}

/// Token ids given as input: their text (embedded with the model's own special tokens).
fn ids_text(g: &gemma::Gemma, ids: &[Value]) -> Result<String, ApiError> {
    let ids: Vec<u32> = ids.iter().map(|x| x.as_u64().map(|i| i as u32).ok_or_else(|| invalid("token ids must be non-negative integers"))).collect::<Result<_, _>>()?;
    g.tokenizer.decode(&ids, true).map_err(|e| invalid(e.to_string()))
}
