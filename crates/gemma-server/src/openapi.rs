//! `GET /openapi.json`: the OpenAPI 3.1 description of every route,
//! generated from the handlers' `#[utoipa::path]` annotations and the
//! request and response types in `crate::schema`. The error answers every
//! route shares (its API's error shape) are added here, by route family.

use crate::schema::openai as oai;
use crate::schema::tgi;
use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Doc, Ref, RefOr};
use utoipa::{Modify, OpenApi};

/// The generated description.
#[derive(OpenApi)]
#[openapi(
    info(title = "gemma-rs", description = "OpenAI- and TGI-compatible routes of `gemma serve`. With `--api-key`, every route but `GET /health` and `GET /` needs `Authorization: Bearer KEY`."),
    paths(
        crate::openai::chat,
        crate::completions::completions,
        crate::embeddings::embeddings,
        crate::openai::models,
        crate::adapters::list,
        crate::adapters::create,
        crate::adapters::delete,
        crate::tgi::generate,
        crate::tgi::generate_stream,
        crate::tgi::compat,
        crate::tgi::info,
        crate::tokenizer_routes::tokenize,
        crate::tokenizer_routes::detokenize,
        crate::tokenizer_routes::tokenizer_info,
        crate::health,
        crate::metrics_route,
        crate::chat_page::page,
        openapi_json,
    ),
    components(schemas(oai::CompletionChunk, tgi::StreamResponse, oai::OpenAiError, tgi::TgiError)),
    modifiers(&SharedErrors),
)]
pub struct ApiDoc;

/// Adds the bearer-key scheme and each route family's error answers.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        for (path, item) in doc.paths.paths.iter_mut() {
            let openai = path.starts_with("/v1/") || matches!(path.as_str(), "/tokenize" | "/detokenize");
            let generation = matches!(path.as_str(), "/generate" | "/generate_stream" | "/");
            let (schema, invalid) = if openai { ("OpenAiError", 400) } else { ("TgiError", 422) };
            let error = |what: &str| {
                ResponseBuilder::new().description(what).content("application/json", Content::new(Some(RefOr::Ref(Ref::from_schema_name(schema))))).build()
            };
            // Routes the API key does not guard: health checks and the chat page.
            let open = |has_body: bool| matches!(path.as_str(), "/health") || (path == "/" && !has_body);
            let ops: [(Option<&mut Operation>, bool); 3] = [(item.get.as_mut(), false), (item.post.as_mut(), true), (item.delete.as_mut(), false)];
            for (op, has_body) in ops {
                let Some(op) = op else { continue };
                let r = &mut op.responses.responses;
                if !open(has_body) {
                    r.entry("401".into()).or_insert_with(|| error("Missing or wrong API key (the server runs with --api-key)").into());
                }
                if has_body {
                    r.entry(invalid.to_string()).or_insert_with(|| error("The request is invalid; the message names the field").into());
                    r.entry("413".into()).or_insert_with(|| {
                        ResponseBuilder::new().description("The body is larger than the server's --max-body-bytes").content("text/plain", Content::new(None::<RefOr<utoipa::openapi::Schema>>)).build().into()
                    });
                }
                if path.starts_with("/v1/") && has_body && path != "/v1/adapters" || generation && has_body {
                    r.entry("429".into()).or_insert_with(|| error("The queue is full; retry later").into());
                    r.entry("503".into()).or_insert_with(|| error("The server is shutting down").into());
                }
                if generation && has_body {
                    r.entry("404".into()).or_insert_with(|| error("No loaded adapter has this `adapter_id`").into());
                }
                if matches!(path.as_str(), "/generate" | "/") && has_body {
                    r.entry("424".into()).or_insert_with(|| error("Generation failed").into());
                }
                if path == "/tokenize" {
                    let tgi = ResponseBuilder::new()
                        .description("A TGI-style request (`inputs`) is invalid")
                        .content("application/json", Content::new(Some(RefOr::Ref(Ref::from_schema_name("TgiError")))))
                        .build();
                    r.entry("422".into()).or_insert_with(|| tgi.into());
                }
                if path == "/v1/chat/completions" || path == "/v1/completions" || path == "/v1/embeddings" {
                    r.entry("500".into()).or_insert_with(|| error("Generation failed").into());
                }
            }
        }
    }
}

/// The description as JSON (`GET /openapi.json`).
#[utoipa::path(get, path = "/openapi.json", tag = "Server", responses((status = 200, description = "This OpenAPI 3.1 description", body = Object)))]
pub async fn openapi_json() -> Json<Doc> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::ApiDoc;
    use utoipa::OpenApi;

    #[test]
    fn every_route_and_its_types_are_described() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializes");
        for (path, methods) in [
            ("/v1/chat/completions", &["post"][..]),
            ("/v1/completions", &["post"]),
            ("/v1/embeddings", &["post"]),
            ("/v1/models", &["get"]),
            ("/v1/adapters", &["get", "post"]),
            ("/v1/adapters/{name}", &["delete"]),
            ("/generate", &["post"]),
            ("/generate_stream", &["post"]),
            ("/", &["get", "post"]),
            ("/info", &["get"]),
            ("/tokenize", &["post"]),
            ("/detokenize", &["post"]),
            ("/tokenizer_info", &["get"]),
            ("/health", &["get"]),
            ("/metrics", &["get"]),
            ("/openapi.json", &["get"]),
        ] {
            for m in methods {
                assert!(doc["paths"][path][m].is_object(), "{m} {path} is not described");
            }
        }
        let schemas = &doc["components"]["schemas"];
        // The chat fields, and the flattened sampling fields by reference.
        let chat = schemas["ChatCompletionRequest"].to_string();
        for field in ["\"messages\"", "\"tools\"", "#/components/schemas/SamplingParams"] {
            assert!(chat.contains(field), "{field} missing from {chat}");
        }
        for field in ["temperature", "max_tokens", "stop", "response_format", "n"] {
            assert!(schemas["SamplingParams"]["properties"][field].is_object(), "{field} missing from SamplingParams");
        }
        for name in ["CompletionResponse", "CompletionChunk", "GenerateParameters", "StreamResponse", "EmbeddingList", "TokenizerInfo", "OpenAiError", "TgiError"] {
            assert!(schemas[name].is_object(), "{name} missing");
        }
        assert_eq!(doc["paths"]["/generate"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/TgiError");
        assert_eq!(doc["paths"]["/v1/completions"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/OpenAiError");
    }
}
