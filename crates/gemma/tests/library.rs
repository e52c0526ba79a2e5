//! End-to-end tests of the library on the tiny fixtures: tokenizer and chat
//! template against transformers, perplexity against transformers, stop rules,
//! streaming UTF-8, seeded sampling, session reuse.

use gemma::{ChatMessage, FinishReason, Gemma, LogitsMode, SamplingParams};
use gemma_formats::SafetensorsSet;
use serde_json::Value;
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn load(name: &str) -> Gemma {
    Gemma::load(testdata(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn goldens_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(testdata(name)).unwrap()).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn tokenizer_matches_transformers() {
    let g = load("tiny-gemma3");
    let gold = goldens_json("tokenizer_goldens.json");
    for case in gold["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        assert_eq!(g.tokenizer.encode(text, false).unwrap(), want, "text {text:?}");
        let mut with_bos = vec![g.tokenizer.bos_id];
        with_bos.extend(&want);
        assert_eq!(g.encode_prompt(text).unwrap(), with_bos, "BOS first for {text:?}");
        assert_eq!(g.tokenizer.decode(&want, false).unwrap(), text, "round trip of {text:?}");
    }
}

#[test]
fn chat_template_matches_transformers() {
    let g = load("tiny-gemma3");
    let gold = goldens_json("tokenizer_goldens.json");
    for case in gold["chat"].as_array().unwrap() {
        let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let got = g.tokenizer.apply_chat_template(&msgs, agp).unwrap();
        assert_eq!(got, case["text"].as_str().unwrap());
        // The built-in template renders the same Gemma format.
        let builtin = gemma::ChatTemplate::gemma().render(&msgs, agp, "<bos>", "<eos>").unwrap();
        assert_eq!(builtin, got);
    }
}

#[test]
fn chat_prompt_has_exactly_one_bos() {
    let g = load("tiny-gemma3");
    let ids = g.encode_chat(&[ChatMessage::new("user", "Hi")]).unwrap();
    assert_eq!(ids[0], g.tokenizer.bos_id);
    assert_eq!(ids.iter().filter(|&&t| t == g.tokenizer.bos_id).count(), 1);
    assert_eq!(ids[1], g.tokenizer.token_to_id("<start_of_turn>").unwrap());
}

#[test]
fn perplexity_matches_transformers() {
    for name in ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3"] {
        let g = load(name);
        let gold = goldens_json(&format!("{name}/goldens.json"));
        let ids = ids_of(&gold["ppl_ids"]);
        let ctx = gold["ppl_ctx"].as_u64().unwrap() as usize;
        let windows = gemma::windows_exact(&ids, ctx).unwrap();
        let p = gemma::perplexity(&g.model, &windows, &mut |_, _| {}).unwrap();
        assert_eq!(p.tokens as u64, gold["ppl_tokens"].as_u64().unwrap());
        let want = gold["ppl"].as_f64().unwrap();
        assert!((p.ppl - want).abs() / want < 1e-5, "{name}: ppl {} vs transformers {want}", p.ppl);
    }
}

fn greedy_golden(name: &str, k: usize) -> (Vec<u32>, Vec<u32>) {
    let g = SafetensorsSet::open_files(&[testdata(name).join("goldens.safetensors")]).unwrap();
    let get = |n: &str| g.load_i64(n).unwrap().into_iter().map(|x| x as u32).collect::<Vec<_>>();
    (get(&format!("greedy.{k}.prompt")), get(&format!("greedy.{k}.ids")))
}

#[test]
fn generate_greedy_matches_transformers_and_stops_on_stop_ids() {
    let g = load("tiny-gemma2");
    let (prompt, want) = greedy_golden("tiny-gemma2", 0);
    let mut req = g.request(&prompt);
    req.params = SamplingParams::greedy();
    req.stop_ids.clear();
    req.max_new_tokens = want.len();
    let out = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
    assert_eq!(out.tokens, want);
    assert_eq!(out.finish, FinishReason::Length);
    // Make the 6th greedy token a stop id: generation ends before it.
    let stop = want[5];
    let first = want.iter().position(|&t| t == stop).unwrap();
    req.stop_ids = vec![stop];
    let out = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
    assert_eq!(out.tokens, want[..first]);
    assert_eq!(out.finish, FinishReason::StopToken(stop));
}

#[test]
fn stop_ids_include_eos_and_end_of_turn() {
    let g = load("tiny-gemma3");
    let ids = g.stop_ids();
    assert!(ids.contains(&g.tokenizer.token_to_id("<eos>").unwrap()));
    assert!(ids.contains(&g.tokenizer.token_to_id("<end_of_turn>").unwrap()));
}

#[test]
fn stop_strings_cut_the_text() {
    let g = load("tiny-gemma3");
    let (prompt, _) = greedy_golden("tiny-gemma3", 0);
    let mut req = g.request(&prompt);
    req.params = SamplingParams::greedy();
    req.max_new_tokens = 24;
    let full = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap().text;
    let cut = full.char_indices().nth(full.chars().count() / 2).unwrap().0;
    let stop: String = full[cut..].chars().take(3).collect();
    let at = full.find(&stop).unwrap();
    req.stop_strings = vec![stop.clone()];
    let mut streamed = String::new();
    let out = g
        .generate(&mut g.new_session(), &req, &mut |s| {
            streamed.push_str(s);
            true
        })
        .unwrap();
    assert_eq!(out.text, full[..at]);
    assert_eq!(streamed, out.text);
    assert_eq!(out.finish, FinishReason::StopString(stop));
}

#[test]
fn streaming_never_splits_characters() {
    let g = load("tiny-gemma3");
    let text = "\u{e9}t\u{e9} \u{65e5}\u{672c} \u{1F600} end \u{4f60}\u{597d}";
    let ids = g.tokenizer.encode(text, false).unwrap();
    assert!(ids.iter().any(|&i| g.tokenizer.id_to_token(i).unwrap().starts_with("<0x")), "fixture must use byte fallback");
    let mut dec = gemma_generate_decoder();
    let mut out = String::new();
    for &id in &ids {
        if let Some(p) = dec.push(&g.tokenizer, id).unwrap() {
            assert!(!p.contains('\u{FFFD}'), "piece {p:?} splits a character");
            out.push_str(&p);
        }
    }
    if let Some(p) = dec.flush(&g.tokenizer).unwrap() {
        out.push_str(&p);
    }
    assert_eq!(out, text);
}

fn gemma_generate_decoder() -> gemma::TokenStreamDecoder {
    gemma::TokenStreamDecoder::new()
}

#[test]
fn seeded_sampling_is_reproducible() {
    let g = load("tiny-gemma1");
    let prompt = g.encode_prompt("Once upon a time").unwrap();
    let run = |seed| {
        let mut req = g.request(&prompt);
        req.params = SamplingParams { temperature: 1.0, top_k: 40, top_p: 0.9, min_p: 0.02, repetition_penalty: 1.1, seed };
        req.max_new_tokens = 30;
        req.stop_ids.clear();
        g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap().tokens
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn session_reuse_equals_fresh_computation() {
    for name in ["tiny-gemma2", "tiny-gemma3"] {
        let g = load(name);
        let a = g.encode_prompt("Once upon a time there was a tiny model that learned").unwrap();
        let b = g.encode_prompt("Once upon a time there was a tiny model that counted: one two").unwrap();
        let mut req = g.request(&a);
        req.params = SamplingParams::greedy();
        req.max_new_tokens = 12;
        req.stop_ids.clear();
        let mut session = g.new_session();
        g.generate(&mut session, &req, &mut |_| true).unwrap();
        req.prompt = b.clone();
        let reused = g.generate(&mut session, &req, &mut |_| true).unwrap();
        assert!(reused.prompt_tokens_computed < b.len(), "{name}: prefix was not reused");
        let fresh = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap();
        assert_eq!(reused.tokens, fresh.tokens, "{name}");
        // And the logits agree after truncating the cache to the shared prefix.
        let full = g.model.forward(&b, &mut g.model.new_cache(), LogitsMode::Last).unwrap();
        let mut cache = g.model.new_cache();
        g.model.forward(&a, &mut cache, LogitsMode::Last).unwrap();
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert!(cache.truncate(common));
        let part = g.model.forward(&b[common..], &mut cache, LogitsMode::Last).unwrap();
        let worst = full.iter().zip(&part).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}: {worst}");
    }
}

#[test]
fn complete_is_greedy_and_plain() {
    let g = load("tiny-gemma3");
    let a = g.complete("The quick brown fox", 10).unwrap();
    assert_eq!(a, g.complete("The quick brown fox", 10).unwrap());
}

#[test]
fn bad_token_ids_are_rejected() {
    let g = load("tiny-gemma3");
    let vocab = g.model.config.vocab_size as u32;
    let err = g.model.forward(&[2, vocab + 5], &mut g.model.new_cache(), LogitsMode::Last).unwrap_err();
    assert!(err.to_string().contains(&format!("token id {}", vocab + 5)), "{err}");
    let err = g.tokenizer.decode(&[vocab + 1000], false).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}
