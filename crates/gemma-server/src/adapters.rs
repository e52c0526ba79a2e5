//! Per-request LoRA adapters: the named PEFT adapters loaded over the one
//! base model (`gemma serve --lora NAME=DIR`, `POST /v1/adapters`,
//! `DELETE /v1/adapters/NAME`). A request picks one by OpenAI `model` or
//! TGI `adapter_id`; requests with different adapters (and none) share the
//! batch. Unloading removes the name; requests already running keep the
//! weights they started with.

use crate::{ApiError, Flavor, Shared};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use gemma::{Adapter, GemmaConfig, LoraAdapter};
use crate::schema::openai::{AdapterCard, AdapterCreate, AdapterList};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Whether `name` can name an adapter: 1 to 64 of letters, digits, `_ - .`.
pub fn valid_adapter_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The loaded adapters, by name.
#[derive(Debug, Default)]
pub struct Registry(RwLock<BTreeMap<String, Adapter>>);

impl Registry {
    /// Load the PEFT adapter in `dir` as `name` (its shapes checked against `cfg`).
    pub fn load(&self, name: &str, dir: &std::path::Path, cfg: &GemmaConfig) -> gemma::Result<()> {
        if !valid_adapter_name(name) {
            return Err(gemma::GemmaError::invalid("name", format!("'{name}' must be 1 to 64 letters, digits, '_', '-' or '.'")));
        }
        let lora = Arc::new(LoraAdapter::load(dir, cfg)?);
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), Adapter { name: name.to_string(), lora });
        Ok(())
    }

    /// The adapter called `name`.
    pub fn get(&self, name: &str) -> Option<Adapter> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// Forget `name`; false when there was none.
    pub fn remove(&self, name: &str) -> bool {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(name).is_some()
    }

    /// Whether `name` is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains_key(name)
    }
}

/// The adapter a TGI `adapter_id` names (None: the base model; the base
/// model's own id also means the base). Unknown ids are a 404 listing the
/// known ones.
pub(crate) fn by_adapter_id(s: &Shared, id: Option<&str>, flavor: Flavor) -> Result<Option<Adapter>, ApiError> {
    let Some(id) = id.filter(|i| !i.is_empty() && *i != s.config.model_id) else { return Ok(None) };
    s.adapters.get(id).map(Some).ok_or_else(|| unknown(s, id, flavor))
}

fn unknown(s: &Shared, id: &str, flavor: Flavor) -> ApiError {
    let known = s.adapters.names();
    let list = if known.is_empty() { "none are loaded".to_string() } else { format!("loaded: {}", known.join(", ")) };
    ApiError::new(flavor, StatusCode::NOT_FOUND, "not_found", format!("no adapter '{id}' ({list})"))
}

/// `GET /v1/adapters`.
#[utoipa::path(get, path = "/v1/adapters", tag = "Adapters", responses((status = 200, description = "The loaded adapters", body = AdapterList)))]
pub(crate) async fn list(State(s): State<Shared>) -> Json<AdapterList> {
    let data = s
        .adapters
        .names()
        .into_iter()
        .filter_map(|n| s.adapters.get(&n))
        .map(|a| AdapterCard {
            id: a.name.clone(),
            object: "adapter".into(),
            source: Some(a.lora.source.clone()),
            parent: Some(s.config.model_id.clone()),
            deleted: None,
        })
        .collect();
    Json(AdapterList { object: "list".into(), data })
}

/// `POST /v1/adapters` with `{"name": …, "path": DIR}`: load at run time.
#[utoipa::path(post, path = "/v1/adapters", tag = "Adapters", request_body = AdapterCreate,
    responses((status = 201, description = "Loaded", body = AdapterCard),
        (status = 409, description = "The name is taken", body = crate::schema::openai::OpenAiError)))]
pub(crate) async fn create(State(s): State<Shared>, body: axum::body::Bytes) -> Result<(StatusCode, Json<AdapterCard>), ApiError> {
    let bad = |m: String| ApiError::invalid(Flavor::OpenAi, m);
    let v = crate::openai::parse(&body)?;
    let AdapterCreate { name, path } = crate::schema::typed(&v, Flavor::OpenAi)?;
    if name == s.config.model_id || s.adapters.contains(&name) {
        return Err(ApiError::new(Flavor::OpenAi, StatusCode::CONFLICT, "conflict", format!("'{name}' is already a model or adapter name")));
    }
    let cfg = s.engine.gemma().model.config.clone();
    let reg = Arc::clone(&s);
    let (n2, p2) = (name.clone(), path.clone());
    tokio::task::spawn_blocking(move || reg.adapters.load(&n2, std::path::Path::new(&p2), &cfg))
        .await
        .map_err(|e| bad(format!("loading failed: {e}")))?
        .map_err(|e| bad(format!("cannot load adapter '{name}' from {path}: {e}")))?;
    Ok((StatusCode::CREATED, Json(AdapterCard { id: name, object: "adapter".into(), source: Some(path), parent: None, deleted: None })))
}

/// `DELETE /v1/adapters/NAME`.
#[utoipa::path(delete, path = "/v1/adapters/{name}", tag = "Adapters", params(("name" = String, Path, description = "The adapter's name")),
    responses((status = 200, description = "Unloaded", body = AdapterCard),
        (status = 404, description = "No such adapter", body = crate::schema::openai::OpenAiError)))]
pub(crate) async fn delete(State(s): State<Shared>, Path(name): Path<String>) -> Result<Json<AdapterCard>, ApiError> {
    if s.adapters.remove(&name) {
        Ok(Json(AdapterCard { id: name, object: "adapter".into(), source: None, parent: None, deleted: Some(true) }))
    } else {
        Err(unknown(&s, &name, Flavor::OpenAi))
    }
}
