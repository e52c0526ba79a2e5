//! The request and response types of every route: handlers deserialize
//! request bodies into them (errors name the field) and build responses
//! from them, and `GET /openapi.json` is generated from the same types
//! (`crate::openapi`).

pub mod openai;
pub mod tgi;

use crate::{ApiError, Flavor};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `v` as a `T`; a mismatch is a validation error naming the field, e.g.
/// `'temperature' must be a number, got string "hot"`.
pub(crate) fn typed<T: DeserializeOwned>(v: &Value, flavor: Flavor) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| ApiError::invalid(flavor, describe(&e.path().to_string(), &e.inner().to_string())))
}

/// A serde error at `path` in words a client can act on.
fn describe(path: &str, msg: &str) -> String {
    let at = |p: &str| if p == "." || p.is_empty() { String::new() } else { format!("'{p}'") };
    if let Some(field) = msg.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        return match at(path).as_str() {
            "" => format!("'{field}' is required"),
            p => format!("{p}: '{field}' is required"),
        };
    }
    let plain = |t: &str| match t {
        "u64" | "u32" | "usize" => "a non-negative integer".to_string(),
        "i64" | "i32" => "an integer".to_string(),
        "f64" | "f32" => "a number".to_string(),
        t => t.to_string(),
    };
    for kind in ["invalid type: ", "invalid value: "] {
        if let Some((got, want)) = msg.strip_prefix(kind).and_then(|m| m.split_once(", expected ")) {
            return format!("{} must be {}, got {got}", at(path), plain(want)).trim_start().to_string();
        }
    }
    match at(path).as_str() {
        "" => msg.to_string(),
        p if msg.starts_with("must be") => format!("{p} {msg}"),
        p => format!("{p}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn errors_name_the_field() {
        assert_eq!(describe("echo", "invalid type: string \"yes\", expected a boolean"), "'echo' must be a boolean, got string \"yes\"");
        assert_eq!(describe("logprobs", "invalid value: integer `-1`, expected u64"), "'logprobs' must be a non-negative integer, got integer `-1`");
        assert_eq!(describe("messages[0]", "missing field `role`"), "'messages[0]': 'role' is required");
        assert_eq!(describe(".", "missing field `messages`"), "'messages' is required");
        assert_eq!(describe("stop", "must be a string or a list of strings"), "'stop' must be a string or a list of strings");
        assert_eq!(describe("tools[0]", "unknown field"), "'tools[0]': unknown field");
    }
}
