//! `gemma pull` / `--model` with a Hugging Face repo of GGUF files
//! (llama.cpp's layout: no config.json), against a fake Hub on loopback
//! (`HF_ENDPOINT`): Q4_K_M picked by default, `REPO:TAG` picks another,
//! an unknown tag lists the files, a repo with neither kind fails clearly.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

/// A fake Hub serving `files` (path under the endpoint → body) with the
/// headers hf-hub's downloader reads (ETag, X-Repo-Commit, Content-Range).
fn fake_hub(files: HashMap<String, Vec<u8>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for s in l.incoming().take(500) {
            let Ok(mut s) = s else { continue };
            let files = Arc::clone(&files);
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut range: Option<(usize, Option<usize>)> = None;
                let mut h = String::new();
                while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = v.trim().split_once('-').unwrap_or(("0", ""));
                        range = Some((a.parse().unwrap_or(0), b.parse().ok()));
                    }
                    h.clear();
                }
                let Some(body) = files.get(&path) else {
                    let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
                    return;
                };
                let etag = format!("\"e{:x}\"", body.len() * 31 + path.len());
                let (status, part, extra) = match range {
                    Some((a, b)) => {
                        let end = b.unwrap_or(body.len().saturating_sub(1)).min(body.len().saturating_sub(1));
                        ("206 Partial Content", body[a.min(body.len())..=end.max(a).min(body.len() - 1)].to_vec(), format!("Content-Range: bytes {a}-{end}/{}\r\n", body.len()))
                    }
                    None => ("200 OK", body.clone(), String::new()),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {etag}\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\n{extra}Connection: close\r\n\r\n",
                    part.len()
                );
                let _ = s.write_all(&part);
            });
        }
    });
    base
}

fn run(args: &[&str], endpoint: &str, home: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gemma"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home.join("hf"))
        .env("GEMMA_CACHE", home.join("gemma"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap()
}

#[test]
fn gguf_repos_on_the_hub_pick_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = HashMap::new();
    for t in ["q8_0", "q4_k_m"] {
        let out = dir.path().join(format!("{t}.gguf"));
        let o = Command::new(env!("CARGO_BIN_EXE_gemma")).args(["quantize", "-m", testdata("tiny-gemma3").to_str().unwrap(), "--type", t, "-o", out.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        files.insert(format!("/o/tiny-GGUF/resolve/main/tiny-{}.gguf", t.to_uppercase()), std::fs::read(&out).unwrap());
    }
    let info = serde_json::json!({"sha": "0123456789abcdef0123456789abcdef01234567", "siblings": [
        {"rfilename": "README.md"}, {"rfilename": "tiny-Q8_0.gguf"}, {"rfilename": "tiny-Q4_K_M.gguf"}]});
    files.insert("/api/models/o/tiny-GGUF/revision/main".into(), info.to_string().into_bytes());
    let plain = serde_json::json!({"sha": "0123456789abcdef0123456789abcdef01234567", "siblings": [{"rfilename": "README.md"}]});
    files.insert("/api/models/o/plain/revision/main".into(), plain.to_string().into_bytes());
    let hub = fake_hub(files);
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let o = run(&["pull", "o/tiny-GGUF"], &hub, dir.path());
    assert!(o.status.success(), "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).trim().ends_with("tiny-Q4_K_M.gguf"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = run(&["generate", "-m", "o/tiny-GGUF:Q8_0", "-p", "The quick", "-n", "3", "-t", "0"], &hub, dir.path());
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("Q8_0 file"), "{}", err(&o));
    let o = run(&["list", "--json"], &hub, dir.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|m| m["name"] == "o/tiny-GGUF" && m["kind"] == "hub"), "{v}");
    let o = run(&["pull", "o/tiny-GGUF:Q2_K"], &hub, dir.path());
    assert!(!o.status.success() && err(&o).contains("Q2_K") && err(&o).contains("tiny-Q8_0.gguf"), "{}", err(&o));
    // Neither a config.json nor GGUF files: config.json's error, not a GGUF one.
    let o = run(&["pull", "o/plain"], &hub, dir.path());
    assert!(!o.status.success() && err(&o).contains("config.json") && !err(&o).contains("panicked"), "{}", err(&o));
}
