//! The published Gemma 3, Gemma 4 and FunctionGemma chat templates render
//! exactly as transformers' `apply_chat_template` does (goldens from
//! tools/reference/make_tiny_gemma4_it.py and
//! make_functiongemma_template_goldens.py, templates in testdata/templates).

use gemma_tokenizer::ChatTemplate;
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/templates")
}

#[test]
fn published_templates_render_as_transformers() {
    let (same, refused) = check_goldens("goldens.json");
    eprintln!("{same} renderings identical, {refused} refused by both");
    assert!(same >= 100);
}

#[test]
fn functiongemma_template_renders_as_transformers() {
    let (same, refused) = check_goldens("goldens_functiongemma.json");
    eprintln!("{same} renderings identical, {refused} refused by both");
    assert!(same >= 20 && refused >= 2);
}

/// Render every golden of `file`; (identical, refused by both).
fn check_goldens(file: &str) -> (usize, usize) {
    let goldens: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir().join(file)).unwrap()).unwrap();
    let (mut same, mut refused) = (0, 0);
    for g in &goldens {
        let name = g["template"].as_str().unwrap();
        let source = std::fs::read_to_string(dir().join(format!("{name}.jinja"))).unwrap();
        let t = ChatTemplate::new(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tools = g.get("tools").filter(|t| !t.is_null());
        let kwargs = g["kwargs"].as_object().unwrap();
        let add = g["add_generation_prompt"].as_bool().unwrap();
        let got = t.render_json_kwargs(&g["messages"], tools, add, "<bos>", "<eos>", kwargs);
        let case = format!("{name} {} (add_generation_prompt {add})", g["case"]);
        match g.get("text").and_then(Value::as_str) {
            Some(want) => {
                let got = got.unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(got, want, "{case}");
                same += 1;
            }
            None => {
                assert!(got.is_err(), "{case}: transformers refused ({}), we rendered {:?}", g["error"], got);
                refused += 1;
            }
        }
    }
    (same, refused)
}

#[test]
fn templates_say_what_they_take() {
    let v5 = ChatTemplate::new(&std::fs::read_to_string(dir().join("gemma4_v5.jinja")).unwrap()).unwrap();
    // v5 sets `enable_thinking` from itself (`| default(false)`), so it is not an undeclared variable.
    assert!(v5.mentions("enable_thinking") && v5.takes_tools() && v5.mentions("<|channel>"));
    let g3 = ChatTemplate::new(&std::fs::read_to_string(dir().join("gemma3.jinja")).unwrap()).unwrap();
    assert!(!g3.takes("enable_thinking") && !g3.takes_tools());
}
