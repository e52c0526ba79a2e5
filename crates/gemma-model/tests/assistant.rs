//! Gemma 4 MTP assistants (`tools/reference/make_tiny_gemma4_assistant.py`):
//! draft logits, drafted tokens and the post-projected hidden states equal
//! transformers' on tiny-gemma4's keys and values, with the plain and the
//! centroid-masked head; bad assistants are refused with the reason.

use gemma_formats::SafetensorsSet;
use gemma_model::{hf, Assistant, LogitsMode, Workspace};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check(name: &str) {
    let target = hf::load_model(&testdata("tiny-gemma4"), None, &mut |_, _| {}).unwrap();
    let a = Assistant::load(&testdata(name), &target.config, None).unwrap();
    let g = SafetensorsSet::open_folder(&testdata(name)).unwrap();
    let goldens = SafetensorsSet::open_files(&[testdata(name).join("goldens.safetensors")]).unwrap();
    drop(g);
    let prompt: Vec<u32> = goldens.load_i64("prompt").unwrap().iter().map(|&t| t as u32).collect();
    let tokens: Vec<u32> = goldens.load_i64("tokens").unwrap().iter().map(|&t| t as u32).collect();
    let f32s = |n: &str| gemma_quant::to_f32_vec(&goldens.load(n).unwrap().1);
    let (want_logits, want_hidden) = (f32s("logits"), f32s("hidden"));
    let mut cache = target.new_cache();
    let mut ws = Workspace::new();
    let backbone = target.config.hidden_size;
    let logits = target.forward_into(&prompt, &mut cache, &mut ws, LogitsMode::Last).unwrap();
    let t0 = gemma_generate_argmax(logits);
    assert_eq!(t0, tokens[0]);
    let mut hidden = ws.head_input(1, backbone).to_vec();
    let mut aws = Workspace::new();
    let (vocab, pos) = (target.config.vocab_size, prompt.len());
    let mut token = t0;
    for (i, want) in tokens[1..].iter().enumerate() {
        let got = a.step(&target, &mut cache, token, pos, &mut hidden, &mut aws).unwrap().to_vec();
        let rel = max_rel(&got, &want_logits[i * vocab..(i + 1) * vocab]);
        assert!(rel < 1e-4, "{name} step {i}: logits differ by {rel}");
        let rel = max_rel(&hidden, &want_hidden[i * backbone..(i + 1) * backbone]);
        assert!(rel < 1e-4, "{name} step {i}: hidden differs by {rel}");
        token = gemma_generate_argmax(&got);
        assert_eq!(token, *want, "{name} step {i}");
    }
    // The target's cache was only read.
    assert_eq!(cache.len(), prompt.len());
}

/// First index of the largest value (torch's argmax).
fn gemma_generate_argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn plain_head_drafts_as_transformers() {
    check("tiny-gemma4-assistant");
}

#[test]
fn centroid_head_drafts_as_transformers() {
    check("tiny-gemma4-assistant-ordered");
}

#[test]
fn an_assistant_for_another_target_is_refused() {
    let other = hf::load_model(&testdata("tiny-gemma4-moe"), None, &mut |_, _| {}).unwrap();
    let err = Assistant::load(&testdata("tiny-gemma4-assistant"), &other.config, None).unwrap_err().to_string();
    assert!(err.contains("backbone_hidden_size") || err.contains("head_dim"), "{err}");
    let g3 = hf::load_model(&testdata("tiny-gemma3"), None, &mut |_, _| {}).unwrap();
    let err = Assistant::load(&testdata("tiny-gemma4-assistant"), &g3.config, None).unwrap_err().to_string();
    assert!(err.contains("drafts for Gemma 4 models"), "{err}");
    let target = hf::load_model(&testdata("tiny-gemma4"), None, &mut |_, _| {}).unwrap();
    assert!(Assistant::load(&testdata("tiny-gemma4"), &target.config, None).unwrap_err().to_string().contains("text_config"));
    assert!(Assistant::load(&testdata("tiny-gemma4"), &g3.config, None).is_err());
}

/// What an assistant drafts from does not depend on how the target got
/// there: the hidden states behind a verify step's rows, and behind a
/// batch's rows (verify or last), equal plain decoding's bit for bit, so
/// a draft after a partly rejected step is the draft after plain decoding.
#[test]
fn hidden_states_behind_verify_and_batch_rows_equal_plain_decoding() {
    use gemma_model::{BatchItem, BatchWorkspace};
    let target = hf::load_model(&testdata("tiny-gemma4"), None, &mut |_, _| {}).unwrap();
    let hidden = target.config.hidden_size;
    let prompt = [2u32, 17, 45, 99, 3, 250, 7, 64];
    let (mut cache, mut ws) = (target.new_cache(), Workspace::new());
    let mut next = gemma_generate_argmax(target.forward_into(&prompt, &mut cache, &mut ws, LogitsMode::Last).unwrap());
    let mut fed = vec![];
    let mut plain = vec![];
    for _ in 0..4 {
        fed.push(next);
        next = gemma_generate_argmax(target.forward_into(&[next], &mut cache, &mut ws, LogitsMode::Last).unwrap());
        plain.extend_from_slice(ws.head_input(1, hidden));
    }
    let mut cache = target.new_cache();
    target.forward_into(&prompt, &mut cache, &mut ws, LogitsMode::Last).unwrap();
    let mut other = cache.clone();
    target.forward_verify(&fed, &mut cache, &mut ws, None).unwrap();
    assert_eq!(ws.head_input(4, hidden), &plain[..], "verify rows");
    // In a batch: the verify item beside a plain decode step of another copy.
    let mut cache = other.clone();
    let mut bws = BatchWorkspace::default();
    let mut items = vec![
        BatchItem { tokens: &fed, cache: &mut cache, score_from: None, last_logits: false, adapter: None, verify: true, media: &[] },
        BatchItem { tokens: &fed[..1], cache: &mut other, score_from: None, last_logits: true, adapter: None, verify: false, media: &[] },
    ];
    let out = target.forward_batch_out(&mut items, &mut bws, &mut |_, _, _| {}).unwrap();
    assert_eq!(out.hidden[0], plain, "batch verify rows");
    assert_eq!(out.hidden[1], plain[..hidden], "batch last row");
}
