//! Our tokenization and loss masks against TRL's SFTTrainer for every data
//! format and loss mask (goldens from tools/reference/make_trl_fixtures.py:
//! the tiny Gemma 3 tokenizer with the official Gemma 3 chat template).

use gemma_tokenizer::GemmaTokenizer;
use gemma_train::data::{example, LossMask};
use serde_json::Value;
use std::path::PathBuf;

#[test]
fn token_ids_and_loss_masks_equal_trl() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/finetune/trl");
    let tok = GemmaTokenizer::from_folder(&dir).unwrap();
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("trl_cases.json")).unwrap()).unwrap();
    let mut checked = 0;
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mask = LossMask::parse(case["mask"].as_str().unwrap()).unwrap();
        for (i, line) in case["lines"].as_array().unwrap().iter().enumerate() {
            let ex = example(line, &tok, mask).unwrap_or_else(|e| panic!("{name}[{i}]: {e}"));
            let want_ids: Vec<u32> = case["ids"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let want_t: Vec<bool> = case["targets"][i].as_array().unwrap().iter().map(|v| v.as_u64() == Some(1)).collect();
            assert_eq!(ex.ids, want_ids, "{name}[{i}]: token ids differ from TRL");
            // Position 0 (BOS) is never predicted, so only 1.. matters.
            assert_eq!(ex.targets[1..], want_t[1..], "{name}[{i}]: loss mask differs from TRL\n ids {:?}", ex.ids);
            checked += 1;
        }
    }
    assert_eq!(checked, 11);
}
