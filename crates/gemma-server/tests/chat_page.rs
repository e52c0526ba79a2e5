//! `GET /`: the built-in chat page is served (also with an API key set,
//! since the page asks for the key), loads nothing from elsewhere, and the
//! TGI `POST /` beside it still works. The page's behaviour in a browser is
//! checked by scripts/check-chat-page.sh (headless Chromium).

mod common;
use common::*;
use gemma_engine::EngineConfig;
use gemma_server::ServerConfig;
use serde_json::json;

#[test]
fn the_chat_page_is_served_self_contained() {
    let s = start(EngineConfig::default(), ServerConfig { api_key: Some("k".into()), ..ServerConfig::default() });
    let r = get(s.addr, "/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let page = &r.body;
    assert!(page.contains("/v1/chat/completions") && page.contains("stream: true") && page.contains("AbortController"));
    // No external assets: nothing is fetched from another origin.
    for bad in ["src=\"http", "href=\"http", "@import", "url(http", "<link", "src=\"//"] {
        assert!(!page.contains(bad), "the page references an external asset ({bad})");
    }
    // The API still needs the key; TGI's POST / is still there.
    assert_eq!(post(s.addr, "/v1/models", json!({})).status, 401);
    let r = request(s.addr, "POST", "/", &[("authorization", "Bearer k"), ("content-type", "application/json")], &json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}}).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
}
