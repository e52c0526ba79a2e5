//! The test server harness: a server on an ephemeral loopback port and a
//! minimal HTTP/1.1 client.
#![allow(dead_code)]

use gemma::Gemma;
use gemma_engine::{Engine, EngineConfig};
use gemma_server::{AppState, ServerConfig};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct Server {
    pub addr: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
    pub gemma: Arc<Gemma>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn start(engine_cfg: EngineConfig, cfg: ServerConfig) -> Server {
    start_with(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3"), engine_cfg, cfg)
}

pub fn start_with(model: PathBuf, engine_cfg: EngineConfig, cfg: ServerConfig) -> Server {
    start_full(model, engine_cfg, cfg, &[])
}

/// A server with named adapters `(name, testdata folder)`.
pub fn start_full(model: PathBuf, engine_cfg: EngineConfig, cfg: ServerConfig, adapters: &[(&str, &str)]) -> Server {
    let gemma = Arc::new(Gemma::load(model).unwrap());
    let registry = gemma_server::adapters::Registry::default();
    for (name, dir) in adapters {
        registry.load(name, &testdata(dir), &gemma.model.config).unwrap();
    }
    let engine = Arc::new(Engine::start(Arc::clone(&gemma), engine_cfg).unwrap());
    let state = Arc::new(AppState { engine, metrics: Default::default(), config: cfg, adapters: registry });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (atx, arx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            atx.send(listener.local_addr().unwrap()).unwrap();
            let shutdown = async move {
                let _ = rx.await;
            };
            gemma_server::serve(listener, state, shutdown, Duration::from_secs(2)).await.unwrap();
        });
    });
    Server { addr: arx.recv().unwrap(), stop: Some(tx), thread: Some(thread), gemma }
}

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

pub fn server() -> Server {
    start(EngineConfig::default(), ServerConfig { model_id: "tiny".into(), ..ServerConfig::default() })
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }
    /// The `data:` payloads of an SSE body.
    pub fn events(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:"))))
            .map(str::to_string)
            .collect()
    }
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body: String::from_utf8(body).unwrap() }
}

pub fn post(addr: SocketAddr, path: &str, body: Value) -> Resp {
    request(addr, "POST", path, &[], &body.to_string())
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], "")
}

/// What the library generates greedily for these ids (the reference).
pub fn greedy(g: &Gemma, prompt: &[u32], n: usize) -> String {
    let mut req = g.request(prompt);
    req.max_new_tokens = n;
    req.params = gemma::SamplingParams::greedy();
    g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap().text
}
