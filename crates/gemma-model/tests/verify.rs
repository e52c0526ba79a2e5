//! `Model::forward_verify` (speculative decoding's verify step): every row
//! is bit-identical to decoding the same tokens one at a time, on every
//! generation's tiny fixture and in several weight types, and after a
//! rollback (`KvCache::truncate`) decoding goes on exactly as if the
//! rejected rows had never been computed.

use gemma_core::DType;
use gemma_model::{hf::load_model, LogitsMode, Model, Workspace};
use std::path::PathBuf;

fn fixture(name: &str, dtype: Option<DType>) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name);
    load_model(&dir, dtype, &mut |_, _| {}).unwrap()
}

/// Greedy decoding one token at a time after `prompt`: the tokens fed and
/// each step's logits.
fn plain(model: &Model, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut cache = model.new_cache();
    let mut ws = Workspace::new();
    let mut logits = model.forward(prompt, &mut cache, LogitsMode::Last).unwrap();
    let (mut fed, mut rows) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let t = argmax(&logits);
        fed.push(t);
        logits = model.forward_into(&[t], &mut cache, &mut ws, LogitsMode::Last).unwrap().to_vec();
        rows.push(logits.clone());
    }
    (fed, rows)
}

fn argmax(l: &[f32]) -> u32 {
    (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32
}

fn check(model: &Model, what: &str) {
    let vocab = model.config.vocab_size;
    let prompt: Vec<u32> = [2u32].into_iter().chain((0..11).map(|i| 5 + (i * 7) % 40)).collect();
    let (fed, rows) = plain(model, &prompt, 12);
    let mut ws = Workspace::new();
    // All 12 fed tokens verified in one step, and in pieces of 5, 1 and 6.
    for pieces in [vec![12], vec![5, 1, 6]] {
        let mut cache = model.new_cache();
        model.forward(&prompt, &mut cache, LogitsMode::Last).unwrap();
        let mut at = 0;
        for n in pieces {
            let got = model.forward_verify(&fed[at..at + n], &mut cache, &mut ws, None).unwrap();
            for (i, row) in got.chunks_exact(vocab).enumerate() {
                assert!(row == &rows[at + i][..], "{what}: verify row {} differs from plain decoding", at + i);
            }
            at += n;
        }
    }
    // Verify a wrong draft, roll back to the accepted prefix, go on: equal.
    let mut cache = model.new_cache();
    model.forward(&prompt, &mut cache, LogitsMode::Last).unwrap();
    let mut draft = fed[..6].to_vec();
    draft[4] = (fed[4] + 1) % vocab as u32;
    draft[5] = 3;
    model.forward_verify(&draft, &mut cache, &mut ws, None).unwrap();
    assert!(cache.truncate(prompt.len() + 4));
    let got = model.forward_verify(&fed[4..9], &mut cache, &mut ws, None).unwrap();
    for (i, row) in got.chunks_exact(vocab).enumerate() {
        assert!(row == &rows[4 + i][..], "{what}: after a rollback, row {} differs", 4 + i);
    }
    let last = model.forward_into(&fed[9..10], &mut cache, &mut ws, LogitsMode::Last).unwrap();
    assert!(last == &rows[9][..], "{what}: plain decoding after verify differs");
}

#[test]
fn verify_rows_equal_plain_decoding_on_every_generation() {
    for name in ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma3-bf16", "tiny-gemma3-f16", "tiny-gemma3n", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma4-unified"] {
        check(&fixture(name, None), name);
    }
}

#[test]
fn verify_rows_equal_plain_decoding_in_quantized_types() {
    for dtype in [DType::Q8_0, DType::Q4_0, DType::BF16, DType::F16] {
        for name in ["tiny-gemma3", "tiny-gemma4"] {
            check(&fixture(name, Some(dtype)), &format!("{name} as {dtype}"));
        }
    }
}

/// A verify step longer than one step takes, or with an id past the
/// vocabulary, is refused before anything changes.
#[test]
fn bad_verify_steps_are_refused() {
    let model = fixture("tiny-gemma3", None);
    let mut cache = model.new_cache();
    let mut ws = Workspace::new();
    let long = vec![5u32; gemma_model::MAX_CHUNK + 1];
    assert!(model.forward_verify(&long, &mut cache, &mut ws, None).unwrap_err().to_string().contains("longer"));
    let bad = [5, model.config.vocab_size as u32];
    assert!(model.forward_verify(&bad, &mut cache, &mut ws, None).is_err());
    assert_eq!(cache.len(), 0);
}
