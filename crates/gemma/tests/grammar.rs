//! Constrained decoding on the tiny fixtures (random weights: left alone,
//! their output is noise, so every match below is the grammar's doing) and,
//! when fetched, on the real 270M: sampled outputs under a JSON schema, a
//! regex and a Lark grammar match them, end at a stop id, and bad grammars
//! are clear errors before any generation.

use gemma::{FinishReason, Gemma, Grammar, LogitsProcessor, SamplingParams};
use serde_json::{json, Value};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

/// Sample `n` outputs for `grammar` with seeds 0..n at temperature 1.
fn sample(g: &Gemma, grammar: &Grammar, n: u64, max_new: usize) -> Vec<(String, FinishReason)> {
    let c = g.compile_grammar(grammar).unwrap_or_else(|e| panic!("{grammar:?}: {e}"));
    (0..n)
        .map(|seed| {
            let mut req = g.request(&g.encode_prompt("Answer:").unwrap());
            req.params = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed, ..SamplingParams::greedy() };
            req.max_new_tokens = max_new;
            req.constraint = Some(c.clone());
            let out = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
            (out.text, out.finish)
        })
        .collect()
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    })
}

/// The schema above, checked by hand.
fn is_person(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    o.len() == 3
        && o.get("name").and_then(Value::as_str).is_some_and(|s| s.chars().count() <= 12)
        && o.get("age").and_then(Value::as_i64).is_some_and(|a| (0..=150).contains(&a))
        && o.get("tags").and_then(Value::as_array).is_some_and(|t| t.len() <= 3 && t.iter().all(|x| x == "a" || x == "b"))
}

#[test]
fn json_schema_regex_and_lark_outputs_match_on_the_tiny_model() {
    let g = Gemma::load(testdata("tiny-gemma3")).unwrap();
    for (text, finish) in sample(&g, &Grammar::JsonSchema(person_schema()), 6, 200) {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        assert!(is_person(&v), "does not match the schema: {text}");
        assert!(matches!(finish, FinishReason::StopToken(_)), "{finish:?} for {text:?}");
    }
    // Any object: noise weights may wander in a string until max_tokens
    // (finish "length", the JSON cut, as the docs say); a finished one parses.
    for (text, finish) in sample(&g, &Grammar::JsonObject, 4, 200) {
        match finish {
            FinishReason::StopToken(_) => assert!(serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object()), "not a JSON object: {text:?}"),
            _ => assert!(text.starts_with('{'), "{text:?}"),
        }
    }
    for (text, finish) in sample(&g, &Grammar::Regex(r"[0-9]{3}-[0-9]{4}".into()), 5, 50) {
        assert!(text.len() == 8 && text.as_bytes()[3] == b'-' && text.chars().filter(char::is_ascii_digit).count() == 7, "{text:?}");
        assert!(matches!(finish, FinishReason::StopToken(_)), "{finish:?}");
    }
    let lark = "start: \"yes\" | \"no\" | \"maybe \" NUM\nNUM: /[1-9][0-9]?/";
    for (text, _) in sample(&g, &Grammar::Lark(lark.into()), 6, 20) {
        let ok = text == "yes" || text == "no" || text.strip_prefix("maybe ").is_some_and(|n| n.parse::<u32>().is_ok_and(|v| (1..100).contains(&v)));
        assert!(ok, "{text:?}");
    }
}

fn all_grammars() -> Vec<Grammar> {
    vec![
        Grammar::JsonSchema(person_schema()),
        Grammar::JsonObject,
        Grammar::Regex(r"[0-9]{3}-[0-9]{4}".into()),
        Grammar::Lark("start: \"yes\" | \"no\" | \"maybe \" NUM\nNUM: /[1-9][0-9]?/".into()),
    ]
}

/// The one-token check behind the mask shortcut says exactly what the
/// full mask says, for every id, at every state along sampled outputs.
#[test]
fn single_token_check_agrees_with_the_mask() {
    let g = Gemma::load(testdata("tiny-gemma3")).unwrap();
    let vocab = g.model.config.vocab_size;
    let stops = g.tokenizer.stop_ids.clone();
    let mut states = 0;
    for grammar in all_grammars() {
        let c = g.compile_grammar(&grammar).unwrap();
        for seed in 0..3 {
            let mut req = g.request(&g.encode_prompt("Answer:").unwrap());
            req.params = SamplingParams { temperature: 1.0, seed, ..SamplingParams::greedy() };
            req.max_new_tokens = 40;
            req.constraint = Some(c.clone());
            let out = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
            let mut p = c.processor(&stops);
            for &t in &out.tokens {
                let mask = p.allowed_ids(vocab).unwrap();
                let checked: Vec<u32> = (0..vocab as u32).filter(|&i| p.allows_now(i).unwrap()).collect();
                assert_eq!(mask, checked, "{grammar:?} after {} tokens", states);
                assert!(mask.contains(&t), "{grammar:?}: sampled {t} is not allowed");
                p.accept(t).unwrap();
                states += 1;
            }
            let end = p.allowed_ids(vocab).unwrap();
            assert_eq!(end, (0..vocab as u32).filter(|&i| p.allows_now(i).unwrap()).collect::<Vec<_>>());
        }
    }
    assert!(states > 50, "{states}");
}

/// Greedy output is the same whether or not the full mask is skipped when
/// the unconstrained choice already fits, and the shortcut is taken.
#[test]
fn mask_shortcut_changes_no_greedy_output() {
    let g = Gemma::load(testdata("tiny-gemma3")).unwrap();
    for grammar in all_grammars() {
        let fast = g.compile_grammar(&grammar).unwrap();
        let full = fast.with_full_masks();
        let run = |c: &gemma::Constraint| {
            let mut req = g.request(&g.encode_prompt("Answer:").unwrap());
            req.params = SamplingParams::greedy();
            req.max_new_tokens = 60;
            req.constraint = Some(c.clone());
            g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap()
        };
        let (a, b) = (run(&fast), run(&full));
        assert_eq!(a.tokens, b.tokens, "{grammar:?}");
        assert_eq!(a.finish, b.finish);
        let (cf, cm) = (fast.counts(), full.counts());
        assert_eq!(cm.checks, 0);
        assert_eq!(cm.masks as usize, b.tokens.len() + matches!(b.finish, FinishReason::StopToken(_)) as usize);
        assert_eq!(cf.masks + cf.skipped, cf.checks, "{cf:?}");
        assert_eq!(cf.checks, cm.masks, "one check per token");
        eprintln!(
            "{}: {} tokens, {} masks skipped of {}; mask {:.1} µs, check {:.1} µs",
            grammar.kind(),
            a.tokens.len(),
            cf.skipped,
            cf.checks,
            cm.mask_seconds / cm.masks as f64 * 1e6,
            cf.check_seconds / cf.checks as f64 * 1e6
        );
    }
}

#[test]
fn bad_grammars_are_clear_errors() {
    let g = Gemma::load(testdata("tiny-gemma3")).unwrap();
    for (grammar, want) in [
        (Grammar::JsonSchema(json!({"type": "frobnicate"})), "json_schema"),
        (Grammar::JsonSchema(json!({"type": "string", "minLength": 5, "maxLength": 2})), "json_schema"),
        (Grammar::Regex("(unclosed".into()), "regex"),
        (Grammar::Regex("a[^\\s\\S]b".into()), "regex"),
        (Grammar::Lark("start: undefined_rule".into()), "lark"),
    ] {
        let err = g.compile_grammar(&grammar).map(|_| ()).expect_err(&format!("{grammar:?} compiled"));
        let msg = err.to_string();
        assert!(msg.contains(want), "{grammar:?}: {msg}");
    }
}

/// The real 270M base model, asked for a person, fills the schema.
#[test]
fn real_model_fills_a_json_schema() {
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        let msg = format!("SKIPPED: real model not found at {} — run scripts/fetch-model.sh", path.display());
        assert!(std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_none(), "{msg}");
        eprintln!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
        return;
    }
    let g = Gemma::load(&path).unwrap();
    let c = g.compile_grammar(&Grammar::JsonSchema(person_schema())).unwrap();
    eprintln!("schema compiled in {:.1} ms", c.compile_seconds * 1e3);
    let mut req = g.request(&g.encode_prompt("A person described as JSON with name, age and tags:\n").unwrap());
    req.params = SamplingParams::greedy();
    req.max_new_tokens = 80;
    req.constraint = Some(c.clone());
    let out = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
    let v: Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", out.text));
    assert!(is_person(&v), "{}", out.text);
    eprintln!("real model: {}", out.text);
    // The same output when every step builds the full mask; per-token times.
    let full = c.with_full_masks();
    req.constraint = Some(full.clone());
    let again = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
    assert_eq!(again.tokens, out.tokens);
    let (f, m) = (c.counts(), full.counts());
    eprintln!(
        "per token: full mask {:.0} µs mean, {:.0} µs max; one-token check {:.1} µs; {} of {} masks skipped",
        m.mask_seconds / m.masks as f64 * 1e6,
        m.max_mask_seconds * 1e6,
        f.check_seconds / f.checks as f64 * 1e6,
        f.skipped,
        f.checks
    );
}
