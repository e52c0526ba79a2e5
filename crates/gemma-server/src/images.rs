//! Images in requests: OpenAI `image_url` content parts and TGI's markdown
//! images `![](…)`, as `data:` URLs or (only when the server allows it)
//! remote `http(s)` URLs fetched with guards, decoded and preprocessed off
//! the async threads; the engine encodes them between decode steps.
//!
//! A remote fetch goes only to public addresses: the resolver drops
//! loopback, private, link-local, shared, multicast and reserved ranges (so
//! a redirect or a DNS answer cannot point the server at its own network),
//! and the body is capped in bytes and the fetch in time.

use crate::openai::invalid;
use crate::{ApiError, Shared};
use base64::Engine as _;
use gemma::vision::PreparedImage;
use serde_json::Value;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Seconds a remote image fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The text of a message's `content` (a string, or text and image parts):
/// each image part becomes the model's image mark (`boi`: Gemma 3's `<start_of_image>`, Gemma 4's `<|image|>`,
/// None for a text-only model, which refuses images) and its URL is added
/// to `urls`. In a message with images, text parts are trimmed, as Gemma
/// 3's template trims each text part of a list.
pub(crate) fn content_text(v: &Value, boi: Option<&str>, urls: &RefCell<Vec<String>>) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let has_images = parts.iter().any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"));
            let mut out = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).ok_or("a text content part needs 'text' (a string)")?;
                        out.push_str(if has_images { t.trim() } else { t });
                    }
                    Some("image_url") => {
                        let Some(boi) = boi else { return Err("this model takes text only (its checkpoint has no vision tower): image_url content parts are refused".into()) };
                        // {"image_url": {"url": …}} as OpenAI sends it, or a bare string.
                        let url = match p.get("image_url") {
                            Some(Value::String(u)) => u.as_str(),
                            Some(o) => o.get("url").and_then(Value::as_str).ok_or("an image_url content part needs 'image_url': {\"url\": …}")?,
                            None => return Err("an image_url content part needs 'image_url': {\"url\": …}".into()),
                        };
                        urls.borrow_mut().push(url.to_string());
                        out.push_str(boi);
                    }
                    _ => return Err("content parts must be {\"type\": \"text\", \"text\": …} or {\"type\": \"image_url\", \"image_url\": {\"url\": …}}".into()),
                }
            }
            Ok(out)
        }
        _ => Err("message content must be a string or an array of content parts".into()),
    }
}

/// TGI's markdown images: each `![](URL)` in `inputs` becomes `boi`; returns
/// the text and the URLs in order.
pub(crate) fn markdown_images(text: &str, boi: &str) -> (String, Vec<String>) {
    let (mut out, mut urls, mut rest) = (String::new(), Vec::new(), text);
    while let Some(i) = rest.find("![](") {
        let after = &rest[i + 4..];
        let Some(j) = after.find(')') else { break };
        out.push_str(&rest[..i]);
        out.push_str(boi);
        urls.push(after[..j].to_string());
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    (out, urls)
}

/// `mm_processor_kwargs` of a request (vLLM's): `do_pan_and_scan` overrides
/// the server's default; other keys are refused by name.
pub(crate) fn pan_and_scan(v: &Value, default: bool) -> Result<bool, ApiError> {
    let Some(kw) = v.get("mm_processor_kwargs").filter(|k| !k.is_null()) else { return Ok(default) };
    let kw = kw.as_object().ok_or_else(|| invalid("'mm_processor_kwargs' must be an object"))?;
    let mut pas = default;
    for (k, x) in kw {
        match (k.as_str(), x) {
            ("do_pan_and_scan", Value::Bool(b)) => pas = *b,
            ("do_pan_and_scan", _) => return Err(invalid("'mm_processor_kwargs.do_pan_and_scan' must be true or false")),
            (other, _) => return Err(invalid(format!("'mm_processor_kwargs.{other}' is not supported (only do_pan_and_scan)"))),
        }
    }
    Ok(pas)
}

/// Fetch, decode and preprocess every image (in order), off the async threads.
pub(crate) async fn prepare(s: &Shared, urls: Vec<String>, pan_and_scan: bool) -> Result<Vec<PreparedImage>, ApiError> {
    let limit = s.engine.config().max_images;
    if urls.len() > limit {
        return Err(invalid(format!("the request has {} images, more than the {limit} one request may hold (--max-images)", urls.len())));
    }
    let mut out = Vec::with_capacity(urls.len());
    for (i, url) in urls.into_iter().enumerate() {
        let (g, remote, cap) = (std::sync::Arc::clone(s.engine.gemma()), s.config.image_urls, s.config.max_image_bytes);
        let prepared = tokio::task::spawn_blocking(move || -> Result<PreparedImage, String> {
            let bytes = image_bytes(&url, remote, cap, false).map_err(|e| format!("image {i}: {e}"))?;
            g.prepare_image(&bytes, &format!("image {i}"), pan_and_scan).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| invalid(format!("image {i}: {e}")))?;
        out.push(prepared.map_err(invalid)?);
    }
    Ok(out)
}

/// The bytes behind an image URL: a base64 `data:` URL, or with `remote`
/// an `http(s)` URL fetched from a public address (`allow_private` lifts
/// the address guard: tests on loopback only).
pub(crate) fn image_bytes(url: &str, remote: bool, cap: usize, allow_private: bool) -> Result<Vec<u8>, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (head, data) = rest.split_once(',').ok_or("a data: URL needs a ',' before its data")?;
        let mut head = head.split(';');
        let mime = head.next().unwrap_or("");
        if !(mime.is_empty() || mime.starts_with("image/")) {
            return Err(format!("the data: URL holds '{mime}', not an image"));
        }
        if !head.any(|p| p == "base64") {
            return Err("only base64 data: URLs are supported (data:image/…;base64,…)".into());
        }
        if data.len() / 4 * 3 > cap {
            return Err(format!("the image is larger than {cap} bytes (--max-image-bytes)"));
        }
        let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD.decode(clean).map_err(|e| format!("the data: URL is not valid base64: {e}"));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        if !remote {
            return Err("remote image URLs are off on this server (start it with --allow-image-urls, or send a data: URL)".into());
        }
        return fetch(url, cap, allow_private);
    }
    Err(format!("unsupported image URL '{}' (send a data:image/…;base64,… URL)", url.chars().take(40).collect::<String>()))
}

/// GET `url` through a resolver that keeps only allowed addresses.
fn fetch(url: &str, cap: usize, allow_private: bool) -> Result<Vec<u8>, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(FETCH_TIMEOUT)
        .redirects(3)
        .resolver(move |netloc: &str| -> std::io::Result<Vec<SocketAddr>> {
            let all: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
            let kept: Vec<SocketAddr> = all.iter().copied().filter(|a| allow_private || is_public(a.ip())).collect();
            if kept.is_empty() && !all.is_empty() {
                return Err(std::io::Error::other(format!("{netloc} resolves to a loopback, private or reserved address, which image fetches never reach")));
            }
            Ok(kept)
        })
        .build();
    let resp = agent.get(url).call().map_err(|e| format!("fetching the image failed: {e}"))?;
    if let Some(n) = resp.header("content-length").and_then(|n| n.parse::<usize>().ok()).filter(|&n| n > cap) {
        return Err(format!("the image is {n} bytes, more than {cap} (--max-image-bytes)"));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(resp.into_reader(), cap as u64 + 1), &mut bytes).map_err(|e| format!("reading the image failed: {e}"))?;
    if bytes.len() > cap {
        return Err(format!("the image is more than {cap} bytes (--max-image-bytes)"));
    }
    Ok(bytes)
}

/// Whether an address is on the public internet (not loopback, private,
/// link-local, shared CGNAT, multicast, documentation or reserved).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_unspecified()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn address_guard_keeps_only_public_addresses() {
        for bad in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        for good in ["8.8.8.8", "1.1.1.1", "142.250.1.1", "2606:4700::1111"] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn image_parts_become_marks_and_urls() {
        let urls = RefCell::new(Vec::new());
        let c = json!([{"type": "text", "text": " Describe: "}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}, {"type": "image_url", "image_url": "data:,x"}]);
        assert_eq!(content_text(&c, Some("<boi>"), &urls).unwrap(), "Describe:<boi><boi>");
        assert_eq!(*urls.borrow(), ["data:image/png;base64,AA==", "data:,x"]);
        let e = content_text(&c, None, &urls).unwrap_err();
        assert!(e.contains("text only"), "{e}");
        assert!(content_text(&json!([{"type": "audio"}]), Some("<boi>"), &urls).is_err());
        assert_eq!(content_text(&json!([{"type": "text", "text": " a "}]), Some("<boi>"), &urls).unwrap(), " a ");
        let (t, u) = markdown_images("What is ![](data:image/png;base64,QQ==) and ![](b)?", "<boi>");
        assert_eq!((t.as_str(), u), ("What is <boi> and <boi>?", vec!["data:image/png;base64,QQ==".to_string(), "b".to_string()]));
    }

    #[test]
    fn data_urls_decode_and_bad_urls_are_named() {
        assert_eq!(image_bytes("data:image/png;base64,QUJD", false, 100, false).unwrap(), b"ABC");
        for (url, says) in [
            ("data:text/plain;base64,QUJD", "not an image"),
            ("data:image/png,ABC", "only base64"),
            ("data:image/png;base64,@@@", "not valid base64"),
            ("http://example.com/cat.png", "remote image URLs are off"),
            ("file:///etc/passwd", "unsupported image URL"),
            ("data:image/png;base64,QUJDQUJDQUJDQUJD", "larger than"),
        ] {
            let e = image_bytes(url, false, 8, false).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        // Remote fetches never reach loopback, even when allowed.
        let e = image_bytes("http://127.0.0.1:9/x.png", true, 100, false).unwrap_err();
        assert!(e.contains("loopback, private or reserved"), "{e}");
    }

    #[test]
    fn remote_fetch_is_capped() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for body in [&b"PNGDATA"[..], &[7u8; 300][..]] {
                let (mut c, _) = listener.accept().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n");
                let _ = c.write_all(body);
            }
        });
        let url = format!("http://127.0.0.1:{port}/cat.png");
        assert_eq!(image_bytes(&url, true, 100, true).unwrap(), b"PNGDATA");
        let e = image_bytes(&url, true, 100, true).unwrap_err();
        assert!(e.contains("more than 100 bytes"), "{e}");
        server.join().unwrap();
    }
}
