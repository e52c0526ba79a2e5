//! `GET /`: the built-in chat page (one self-contained HTML file, compiled
//! in; no external assets). It streams from `/v1/chat/completions` and sends
//! the API key the user types, so the page itself needs no key.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
const PAGE: &str = include_str!("chat_page.html");

/// What the browser may load: only this page's inline code and this server.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The route.
#[utoipa::path(get, path = "/", tag = "Server", responses((status = 200, description = "The built-in chat page", body = String, content_type = "text/html")))]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
