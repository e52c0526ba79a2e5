//! Tool calls written with control tokens, as FunctionGemma and Gemma 4
//! write them: `OPEN call:NAME{key:value,…} CLOSE`, keys bare and in
//! sorted order (the templates `dictsort` them), strings between two QUOTE
//! tokens, numbers, `true`/`false`/`null`, `[…]` lists and `{…}` objects.
//! Declarations are `DECL_OPEN declaration:NAME{description:…,parameters:…}
//! DECL_CLOSE`, results `RESP_OPEN response:NAME{…} RESP_CLOSE`.
//!
//! The control tokens never come out of text, so a string can hold any
//! character and the grammar of a call (built here from each tool's JSON
//! schema, as a Lark grammar for llguidance) needs no escaping rules.

use crate::tools::{Call, Tool};
use crate::GemmaTokenizer;
use serde_json::{Map, Number, Value};

/// The control tokens of one model family's call syntax.
#[derive(Debug, PartialEq)]
pub struct CallSyntax {
    /// Family name, for messages.
    pub name: &'static str,
    /// Opens a call.
    pub open: &'static str,
    /// Closes a call.
    pub close: &'static str,
    /// Around a string value.
    pub quote: &'static str,
    /// Opens a declaration.
    pub decl_open: &'static str,
    /// Closes a declaration.
    pub decl_close: &'static str,
    /// Opens a tool's response.
    pub resp_open: &'static str,
    /// Closes a tool's response.
    pub resp_close: &'static str,
}

/// FunctionGemma (Gemma 3 270M with function-call tokens).
pub const FUNCTION_GEMMA: CallSyntax = CallSyntax {
    name: "FunctionGemma",
    open: "<start_function_call>",
    close: "<end_function_call>",
    quote: "<escape>",
    decl_open: "<start_function_declaration>",
    decl_close: "<end_function_declaration>",
    resp_open: "<start_function_response>",
    resp_close: "<end_function_response>",
};

/// Gemma 4.
pub const GEMMA4: CallSyntax = CallSyntax {
    name: "Gemma 4",
    open: "<|tool_call>",
    close: "<tool_call|>",
    quote: "<|\"|>",
    decl_open: "<|tool>",
    decl_close: "<tool|>",
    resp_open: "<|tool_response>",
    resp_close: "<tool_response|>",
};

impl CallSyntax {
    /// The syntax whose tokens the tokenizer has, all as control tokens.
    pub fn detect(tok: &GemmaTokenizer) -> Option<&'static CallSyntax> {
        [&FUNCTION_GEMMA, &GEMMA4].into_iter().find(|s| {
            [s.open, s.close, s.quote, s.decl_open, s.decl_close, s.resp_open, s.resp_close]
                .iter()
                .all(|t| tok.token_to_id(t).is_some_and(|id| tok.is_control(id)))
        })
    }

    /// Lark rules (rule `calls` and its helpers) for one call of `tools`,
    /// or one or more with `parallel`.
    pub fn calls_lark(&self, tools: &[&Tool], parallel: bool) -> String {
        let mut g = LarkGen { syn: self, rules: Vec::new(), terminals: Vec::new() };
        let alts: Vec<String> = tools
            .iter()
            .map(|t| format!("{} {} {} {}", special(self.open), lit(&format!("call:{}", t.name)), g.object_of(&t.parameters), special(self.close)))
            .collect();
        let one = alts.join(" | ");
        let calls = if parallel { format!("calls: ({one})+") } else { format!("calls: {one}") };
        let mut out = vec![calls];
        out.append(&mut g.rules);
        out.append(&mut g.terminals);
        out.push(r"STR: /[^\x00]+/".into());
        out.push(r"INT: /-?(0|[1-9][0-9]{0,17})/".into());
        out.push(r"NUM: /-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?([eE][+-]?[0-9]{1,3})?/".into());
        out.push(r"KEY: /[A-Za-z_][A-Za-z0-9_\-]{0,63}/".into());
        out.push(r#"any: str | NUM | "true" | "false" | "null" | "[" (any ("," any)*)? "]" | "{" (KEY ":" any ("," KEY ":" any)*)? "}""#.to_string());
        out.push(format!("str: {} STR? {}", special(self.quote), special(self.quote)));
        out.join("\n") + "\n"
    }

    /// The calls in `text` (control tokens spelled out), when the whole
    /// text is calls of known tools.
    pub fn parse(&self, text: &str, tools: &[Tool]) -> Option<Vec<Call>> {
        let mut p = Parser { s: text.trim(), syn: self };
        let mut calls = Vec::new();
        while !p.s.is_empty() {
            p.eat(self.open)?;
            p.eat("call:")?;
            let brace = p.s.find('{')?;
            let name = p.s[..brace].trim().to_string();
            tools.iter().find(|t| t.name == name)?;
            p.s = &p.s[brace..];
            let args = p.value()?;
            p.eat(self.close)?;
            p.s = p.s.trim_start();
            calls.push(Call { name, arguments: args.to_string() });
        }
        (!calls.is_empty()).then_some(calls)
    }

    /// A value as the templates write it (`format_argument`).
    pub fn write_value(&self, v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(self.quote);
                out.push_str(s);
                out.push_str(self.quote);
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write_value(x, out);
                }
                out.push(']');
            }
            Value::Object(o) => {
                out.push('{');
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push(':');
                    self.write_value(&o[k], out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// An assistant's call, as the model writes it.
    pub fn write_call(&self, name: &str, args: &Value) -> String {
        let mut s = format!("{}call:{name}", self.open);
        let args = if args.is_object() { args.clone() } else { serde_json::json!({}) };
        self.write_value(&args, &mut s);
        s.push_str(self.close);
        s
    }

    /// A function's declaration (types upper-cased, as the templates write them).
    pub fn write_declaration(&self, t: &Tool) -> String {
        let mut d = serde_json::json!({"description": t.description, "parameters": upper_types(&t.parameters)});
        if t.description.is_empty() {
            d.as_object_mut().expect("object").remove("description");
        }
        let mut s = format!("{}declaration:{}", self.decl_open, t.name);
        self.write_value(&d, &mut s);
        s.push_str(self.decl_close);
        s
    }

    /// A tool's result: an object's fields, or `value:` the text.
    pub fn write_response(&self, name: &str, content: &str) -> String {
        let v = match serde_json::from_str::<Value>(content) {
            Ok(o @ Value::Object(_)) => o,
            _ => serde_json::json!({"value": content}),
        };
        let mut s = format!("{}response:{name}", self.resp_open);
        self.write_value(&v, &mut s);
        s.push_str(self.resp_close);
        s
    }
}

/// `"type": "string"` → `"STRING"`, all the way down.
fn upper_types(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let x = match (k.as_str(), x) {
                        ("type", Value::String(t)) => Value::String(t.to_uppercase()),
                        _ => upper_types(x),
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(upper_types).collect()),
        other => other.clone(),
    }
}

/// A Lark string literal.
fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A special token in Lark.
fn special(t: &str) -> String {
    t.to_string()
}

/// Builds the value rules of one grammar.
struct LarkGen<'a> {
    syn: &'a CallSyntax,
    rules: Vec<String>,
    terminals: Vec<String>,
}

impl LarkGen<'_> {
    /// A new rule `v<N>: body`; its name.
    fn rule(&mut self, body: String) -> String {
        let name = format!("v{}", self.rules.len());
        self.rules.push(format!("{name}: {body}"));
        name
    }

    /// The expression of a value matching `schema`.
    fn value(&mut self, schema: &Value) -> String {
        let q = special(self.syn.quote);
        let syn = self.syn;
        let literal = |v: &Value| literal_expr(syn, v);
        if let Some(c) = schema.get("const") {
            return self.rule(literal_or_empty(literal(c), &q));
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            let alts: Vec<String> = e.iter().map(|v| literal_or_empty(literal(v), &q)).collect();
            return self.rule(alts.join(" | "));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(a) = schema.get(key).and_then(Value::as_array).filter(|a| !a.is_empty()) {
                let alts: Vec<String> = a.iter().map(|s| self.value(s)).collect();
                return self.rule(alts.join(" | "));
            }
        }
        match schema.get("type") {
            Some(Value::Array(types)) => {
                let alts: Vec<String> = types
                    .iter()
                    .map(|t| {
                        let mut s = schema.clone();
                        s["type"] = t.clone();
                        self.value(&s)
                    })
                    .collect();
                self.rule(alts.join(" | "))
            }
            Some(Value::String(t)) => match t.as_str() {
                "string" => match schema.get("maxLength").and_then(Value::as_u64) {
                    Some(0) => format!("{q} {q}"),
                    Some(n) if n <= 1000 => {
                        let term = format!("STR{}", self.rules.len());
                        self.terminals.push(format!("{term}: /[^\\x00]{{1,{n}}}/"));
                        format!("({q} {term}? {q})")
                    }
                    _ => "str".into(),
                },
                "integer" => "INT".into(),
                "number" => "NUM".into(),
                "boolean" => "(\"true\" | \"false\")".into(),
                "null" => "\"null\"".into(),
                "array" => {
                    let item = schema.get("items").map_or_else(|| "any".to_string(), |i| self.value(i));
                    let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
                    self.rule(if min > 0 { format!("\"[\" {item} (\",\" {item})* \"]\"") } else { format!("\"[\" ({item} (\",\" {item})*)? \"]\"") })
                }
                "object" => self.object_of(schema),
                _ => "any".into(),
            },
            _ if schema.get("properties").is_some() => self.object_of(schema),
            _ => "any".into(),
        }
    }

    /// `{key:value,…}` with `schema`'s properties in sorted order, the
    /// required ones present, the others optional; any keys without
    /// `properties`.
    fn object_of(&mut self, schema: &Value) -> String {
        let empty = Map::new();
        let props = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        if props.is_empty() {
            let free = schema.get("additionalProperties").is_none_or(|a| a != &Value::Bool(false));
            return self.rule(if free { "\"{\" (KEY \":\" any (\",\" KEY \":\" any)*)? \"}\"".into() } else { "\"{\" \"}\"".into() });
        }
        let required: Vec<&str> = schema.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let mut keys: Vec<&String> = props.keys().collect();
        keys.sort();
        let items: Vec<(String, bool)> = keys.iter().map(|k| (format!("{} {}", lit(&format!("{k}:")), self.value(&props[*k])), required.contains(&k.as_str()))).collect();
        // tail(i): the items from i on after one is written (each after a comma).
        let tail = |from: usize| -> String {
            items[from..].iter().map(|(p, req)| if *req { format!("\",\" {p}") } else { format!("(\",\" {p})?") }).collect::<Vec<_>>().join(" ")
        };
        // head(i): the items from i on, none written yet.
        fn head(items: &[(String, bool)], i: usize, tail: &dyn Fn(usize) -> String) -> Option<String> {
            let (p, req) = items.get(i)?;
            let first = format!("{p} {}", tail(i + 1)).trim().to_string();
            Some(match (req, head(items, i + 1, tail)) {
                (true, _) => first,
                (false, None) => format!("({first})?"),
                (false, Some(rest)) => format!("({first} | {rest})"),
            })
        }
        let body = head(&items, 0, &tail).unwrap_or_default();
        self.rule(format!("\"{{\" {body} \"}}\""))
    }
}

/// The Lark expression of one fixed value: quote tokens as specials, the
/// rest literal text.
fn literal_expr(syn: &CallSyntax, v: &Value) -> String {
    let mut s = String::new();
    syn.write_value(v, &mut s);
    let q = special(syn.quote);
    s.split(syn.quote).enumerate().filter(|(_, p)| !p.is_empty()).map(|(i, p)| if i % 2 == 1 { format!("{q} {} {q}", lit(p)) } else { lit(p) }).collect::<Vec<_>>().join(" ")
}

/// A literal that was all quotes (the empty string) becomes two quotes.
fn literal_or_empty(s: String, q: &str) -> String {
    if s.is_empty() {
        format!("{q} {q}")
    } else {
        s
    }
}

/// Reads call arguments back into JSON.
struct Parser<'a> {
    s: &'a str,
    syn: &'a CallSyntax,
}

impl Parser<'_> {
    fn eat(&mut self, t: &str) -> Option<()> {
        self.s = self.s.strip_prefix(t)?;
        Some(())
    }

    fn value(&mut self) -> Option<Value> {
        let q = self.syn.quote;
        if let Some(rest) = self.s.strip_prefix(q) {
            let end = rest.find(q)?;
            self.s = &rest[end + q.len()..];
            return Some(Value::String(rest[..end].to_string()));
        }
        if let Some(rest) = self.s.strip_prefix('{') {
            self.s = rest;
            let mut o = Map::new();
            if let Some(rest) = self.s.strip_prefix('}') {
                self.s = rest;
                return Some(Value::Object(o));
            }
            loop {
                let colon = self.s.find(':')?;
                let key = self.s[..colon].trim();
                let key = key.strip_prefix(q).and_then(|k| k.strip_suffix(q)).unwrap_or(key).to_string();
                self.s = &self.s[colon + 1..];
                let v = self.value()?;
                o.insert(key, v);
                if let Some(rest) = self.s.strip_prefix(',') {
                    self.s = rest;
                } else {
                    self.eat("}")?;
                    return Some(Value::Object(o));
                }
            }
        }
        if let Some(rest) = self.s.strip_prefix('[') {
            self.s = rest;
            let mut a = Vec::new();
            if let Some(rest) = self.s.strip_prefix(']') {
                self.s = rest;
                return Some(Value::Array(a));
            }
            loop {
                a.push(self.value()?);
                if let Some(rest) = self.s.strip_prefix(',') {
                    self.s = rest;
                } else {
                    self.eat("]")?;
                    return Some(Value::Array(a));
                }
            }
        }
        let end = self.s.find([',', '}', ']']).unwrap_or(self.s.len());
        let word = self.s[..end].trim();
        self.s = &self.s[end..];
        match word {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            // Gemma 4's templates before gemma4_v5 write a null argument as Python's `None`.
            "null" | "None" => Some(Value::Null),
            w => w.parse::<i64>().map(Value::from).ok().or_else(|| w.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: "Weather in a city".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]}),
        }
    }

    #[test]
    fn calls_round_trip_through_writer_and_parser() {
        let t = weather();
        for syn in [&FUNCTION_GEMMA, &GEMMA4] {
            let args = json!({"city": "Paris, {France}", "days": 3, "unit": "C", "extra": [1.5, true, null, {"k": "v"}]});
            let text = syn.write_call("get_weather", &args);
            let calls = syn.parse(&format!("{text} {text}"), std::slice::from_ref(&t)).unwrap();
            assert_eq!(calls.len(), 2);
            assert_eq!(serde_json::from_str::<Value>(&calls[0].arguments).unwrap(), args);
            assert!(syn.parse("plain text", std::slice::from_ref(&t)).is_none());
            assert!(syn.parse(&syn.write_call("other", &json!({})), std::slice::from_ref(&t)).is_none());
        }
        assert_eq!(
            FUNCTION_GEMMA.write_call("get_weather", &json!({"unit": "C", "city": "Paris"})),
            "<start_function_call>call:get_weather{city:<escape>Paris<escape>,unit:<escape>C<escape>}<end_function_call>"
        );
        assert_eq!(
            FUNCTION_GEMMA.write_declaration(&Tool { name: "f".into(), description: "d".into(), parameters: json!({"type": "object", "properties": {"a": {"type": "string"}}}) }),
            "<start_function_declaration>declaration:f{description:<escape>d<escape>,parameters:{properties:{a:{type:<escape>STRING<escape>}},type:<escape>OBJECT<escape>}}<end_function_declaration>"
        );
        assert_eq!(FUNCTION_GEMMA.write_response("f", "sunny"), "<start_function_response>response:f{value:<escape>sunny<escape>}<end_function_response>");
    }

    #[test]
    fn grammar_has_sorted_keys_and_required_ones() {
        let t = weather();
        let g = FUNCTION_GEMMA.calls_lark(&[&t], false);
        assert!(g.contains("\"call:get_weather\""), "{g}");
        let city = g.find("\"city:\"").unwrap();
        let days = g.find("\"days:\"").unwrap();
        assert!(city < days, "{g}");
    }
}
