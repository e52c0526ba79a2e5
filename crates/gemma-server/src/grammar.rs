//! Structured output on both APIs: OpenAI `response_format` and TGI
//! `parameters.grammar` become a [`Grammar`], compiled before any work
//! (errors are 400 / 422 naming the problem).
//!
//! OpenAI strict mode (`json_schema.strict: true`) accepts the schemas
//! OpenAI's strict mode does: an object at the root, every object with
//! `additionalProperties: false` and all its properties `required`, and
//! none of the keywords strict mode rejects (below). Non-strict schemas go
//! to llguidance as given.

use gemma::{Constraint, Grammar};
use serde_json::Value;

/// Keywords OpenAI's strict mode rejects.
const STRICT_UNSUPPORTED: [&str; 9] =
    ["allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "patternProperties", "unevaluatedProperties"];

/// The grammar of an OpenAI `response_format` (None for `text` or absent).
pub(crate) fn openai_response_format(v: &Value) -> Result<Option<Grammar>, String> {
    let Some(rf) = v.get("response_format").filter(|x| !x.is_null()) else { return Ok(None) };
    let kind = rf.get("type").and_then(Value::as_str).ok_or("response_format needs a 'type' ('text', 'json_object' or 'json_schema')")?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Grammar::JsonObject)),
        "json_schema" => {
            let js = rf.get("json_schema").filter(|x| x.is_object()).ok_or("response_format 'json_schema' needs a 'json_schema' object")?;
            let name = js.get("name").and_then(Value::as_str).ok_or("response_format.json_schema needs a 'name'")?;
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("response_format.json_schema.name '{name}' must be 1 to 64 letters, digits, '_' or '-'"));
            }
            let schema = js.get("schema").cloned().unwrap_or_else(|| serde_json::json!({}));
            if !schema.is_object() {
                return Err("response_format.json_schema.schema must be a JSON schema object".into());
            }
            if js.get("strict").and_then(Value::as_bool) == Some(true) {
                check_strict(&schema, &schema, "schema").map_err(|e| format!("invalid schema for response_format '{name}' in strict mode: {e}"))?;
            }
            Ok(Some(Grammar::JsonSchema(schema)))
        }
        other => Err(format!("response_format type '{other}' is not supported ('text', 'json_object' or 'json_schema')")),
    }
}

/// OpenAI strict-mode rules over `s` (at `path`, for messages).
fn check_strict(root: &Value, s: &Value, path: &str) -> Result<(), String> {
    let Some(o) = s.as_object() else {
        return Err(format!("{path} must be a schema object"));
    };
    if std::ptr::eq(root, s) && o.get("type").and_then(Value::as_str) != Some("object") {
        return Err("the root must be an object ('type': 'object'), not anyOf or another type".into());
    }
    for k in STRICT_UNSUPPORTED {
        if o.contains_key(k) {
            return Err(format!("'{k}' is not permitted (at {path})"));
        }
    }
    let is_object = match o.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => o.contains_key("properties"),
    };
    if is_object {
        if o.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(format!("'additionalProperties' must be false (at {path})"));
        }
        let props = o.get("properties").and_then(Value::as_object);
        let required: Vec<&str> = o.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        for key in props.map(|p| p.keys().collect::<Vec<_>>()).unwrap_or_default() {
            if !required.contains(&key.as_str()) {
                return Err(format!("'required' must list every property; '{key}' is missing (at {path})"));
            }
        }
    }
    let sub = |child: &Value, p: String| check_strict(root, child, &p);
    for key in ["properties", "$defs", "definitions"] {
        if let Some(m) = o.get(key).and_then(Value::as_object) {
            for (k, child) in m {
                sub(child, format!("{path}.{key}.{k}"))?;
            }
        }
    }
    if let Some(items) = o.get("items") {
        sub(items, format!("{path}.items"))?;
    }
    if let Some(list) = o.get("anyOf").and_then(Value::as_array) {
        for (i, child) in list.iter().enumerate() {
            sub(child, format!("{path}.anyOf[{i}]"))?;
        }
    }
    Ok(())
}

/// The grammar of TGI's `parameters.grammar` (`{"type": "json" | "regex" |
/// "json_schema", "value": …}`); a JSON schema may come as a string.
pub(crate) fn tgi_grammar(p: &Value) -> Result<Option<Grammar>, String> {
    let Some(g) = p.get("grammar").filter(|x| !x.is_null()) else { return Ok(None) };
    let kind = g.get("type").and_then(Value::as_str).ok_or("grammar needs a 'type' ('json', 'regex' or 'json_schema')")?;
    let value = g.get("value").ok_or("grammar needs a 'value'")?;
    let schema_of = |v: &Value| -> Result<Value, String> {
        match v {
            Value::String(s) => serde_json::from_str(s).map_err(|e| format!("grammar value is not a JSON schema: {e}")),
            Value::Object(_) => Ok(v.clone()),
            _ => Err("grammar value must be a JSON schema (an object or a string)".into()),
        }
    };
    match kind {
        "json" => Ok(Some(Grammar::JsonSchema(schema_of(value)?))),
        "json_schema" => Ok(Some(Grammar::JsonSchema(schema_of(value.get("schema").unwrap_or(value))?))),
        "regex" => Ok(Some(Grammar::Regex(value.as_str().ok_or("grammar value of type 'regex' must be a string")?.to_string()))),
        other => Err(format!("grammar type '{other}' is not supported ('json', 'regex' or 'json_schema')")),
    }
}

/// Compile for this model, counting its mask work into the server's
/// metrics; the error message is the client's.
pub(crate) fn compile(s: &crate::AppState, grammar: &Grammar) -> Result<Constraint, String> {
    let c = s.engine.gemma().compile_grammar(grammar).map_err(|e| e.to_string())?;
    s.metrics.grammar_compiled(c.compile_seconds);
    Ok(c.counting_into(s.metrics.grammar.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rf(schema: Value, strict: bool) -> Result<Option<Grammar>, String> {
        openai_response_format(&json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": strict}}}))
    }

    #[test]
    fn strict_mode_accepts_what_openai_accepts_and_names_what_it_rejects() {
        let ok = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"$ref": "#/$defs/p"}}},
            "required": ["a", "b"], "additionalProperties": false,
            "$defs": {"p": {"type": "object", "properties": {"x": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}, "required": ["x"], "additionalProperties": false}}});
        assert!(matches!(rf(ok, true), Ok(Some(Grammar::JsonSchema(_)))));
        for (bad, want) in [
            (json!({"type": "array", "items": {"type": "string"}}), "root must be an object"),
            (json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}), "additionalProperties"),
            (json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}), "'a' is missing"),
            (json!({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}, "required": ["a"], "additionalProperties": false}), "'allOf'"),
            (json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}, "required": ["a"], "additionalProperties": false}), "schema.properties.a"),
        ] {
            let e = rf(bad.clone(), true).expect_err(&bad.to_string());
            assert!(e.contains(want), "{bad}: {e}");
            assert!(rf(bad, false).is_ok(), "non-strict takes it");
        }
        assert!(openai_response_format(&json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}})).unwrap_err().contains("name"));
        assert!(openai_response_format(&json!({"response_format": {"type": "xml"}})).unwrap_err().contains("'xml'"));
        assert_eq!(openai_response_format(&json!({"response_format": {"type": "text"}})), Ok(None));
        assert_eq!(openai_response_format(&json!({"response_format": {"type": "json_object"}})), Ok(Some(Grammar::JsonObject)));
    }

    #[test]
    fn tgi_grammar_forms() {
        let s = json!({"type": "object"});
        assert_eq!(tgi_grammar(&json!({"grammar": {"type": "json", "value": s}})), Ok(Some(Grammar::JsonSchema(s.clone()))));
        assert_eq!(tgi_grammar(&json!({"grammar": {"type": "json", "value": "{\"type\": \"object\"}"}})), Ok(Some(Grammar::JsonSchema(s.clone()))));
        assert_eq!(tgi_grammar(&json!({"grammar": {"type": "json_schema", "value": {"name": "n", "schema": s}}})), Ok(Some(Grammar::JsonSchema(s))));
        assert_eq!(tgi_grammar(&json!({"grammar": {"type": "regex", "value": "a+"}})), Ok(Some(Grammar::Regex("a+".into()))));
        assert!(tgi_grammar(&json!({"grammar": {"type": "regex", "value": 3}})).is_err());
        assert!(tgi_grammar(&json!({"grammar": {"type": "ebnf", "value": "x"}})).unwrap_err().contains("'ebnf'"));
        assert_eq!(tgi_grammar(&json!({})), Ok(None));
    }
}
