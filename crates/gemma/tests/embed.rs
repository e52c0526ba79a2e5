//! EmbeddingGemma on a tiny random sentence-transformers folder
//! (tools/reference/make_tiny_embeddinggemma.py): token ids, embeddings with
//! each prompt and Matryoshka truncation against sentence-transformers.

use gemma::{EmbedOptions, Gemma};
use serde_json::Value;
use std::path::PathBuf;

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-embeddinggemma")
}

fn goldens() -> Value {
    serde_json::from_str(&std::fs::read_to_string(folder().join("goldens.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn embeddings_match_sentence_transformers() {
    let g = Gemma::load(folder()).unwrap();
    assert!(g.is_embedding_model() && g.model.config.bidirectional);
    let gold = goldens();
    let texts: Vec<String> = gold["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let st = g.sentence.as_ref().unwrap();
    for name in ["none", "query", "document"] {
        let prompt = if name == "none" { String::new() } else { st.prompts[name].clone() };
        for (t, want) in texts.iter().zip(gold[format!("{name}.ids")].as_array().unwrap()) {
            let ids = g.tokenizer.encode_with_special_tokens(&format!("{prompt}{t}")).unwrap();
            let want: Vec<u32> = want.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(ids, want, "{name}: {t}");
        }
        let opts = EmbedOptions { prompt_name: (name != "none").then(|| name.to_string()), ..Default::default() };
        let got = g.embed(&texts, &opts).unwrap();
        for (i, (e, w)) in got.iter().zip(floats(&gold[format!("{name}.embeddings")])).enumerate() {
            assert_eq!(e.values.len(), 48);
            let worst = e.values.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let c = cosine(&e.values, &w);
            eprintln!("{name} text {i}: 1 - cos = {:.2e}, max |diff| = {worst:.2e}", 1.0 - c);
            assert!(1.0 - c < 1e-5 && worst < 1e-5, "{name} text {i}: cos {c}, max diff {worst}");
        }
    }
    let opts = EmbedOptions { prompt_name: Some("query".into()), dimensions: Some(16), ..Default::default() };
    for (e, w) in g.embed(&texts, &opts).unwrap().iter().zip(floats(&gold["query.dim16"])) {
        assert_eq!(e.values.len(), 16);
        assert!(1.0 - cosine(&e.values, &w) < 1e-5);
        let norm: f32 = e.values.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "renormalized: {norm}");
    }
}

#[test]
fn bad_embedding_requests_are_clear_errors() {
    let g = Gemma::load(folder()).unwrap();
    let t = vec!["x".to_string()];
    let e = g.embed(&t, &EmbedOptions { dimensions: Some(49), ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("dimensions"), "{e}");
    let e = g.embed(&t, &EmbedOptions { prompt_name: Some("nope".into()), ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("query"), "{e}");
    // An embedding model does not generate.
    let req = g.request(&g.encode_prompt("hi").unwrap());
    let e = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap_err().to_string();
    assert!(e.contains("embedding"), "{e}");
}

#[test]
fn a_batch_embeds_each_text_as_alone() {
    // The texts of one pass share every projection, so a row may round
    // differently than alone; the vectors agree to f32 noise.
    let g = Gemma::load(folder()).unwrap();
    let texts: Vec<String> = goldens()["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let opts = EmbedOptions::default();
    let together = g.embed(&texts, &opts).unwrap();
    for (t, b) in texts.iter().zip(&together) {
        let alone = g.embed(std::slice::from_ref(t), &opts).unwrap().remove(0);
        assert_eq!(alone.tokens, b.tokens);
        let worst = alone.values.iter().zip(&b.values).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "{t}: {worst}");
    }
}
