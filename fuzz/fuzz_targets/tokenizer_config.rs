//! `tokenizer_config.json` (special tokens, add_bos/add_eos, chat template)
//! beside the tiny tokenizer.json: load, encode, render a chat.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("tok");
    std::fs::create_dir_all(&dir).expect("folder");
    let tj = dir.join("tokenizer.json");
    if !tj.exists() {
        std::fs::copy(common::testdata("tiny-gemma3/tokenizer.json"), &tj).expect("copy tokenizer");
    }
    std::fs::write(dir.join("tokenizer_config.json"), data).expect("write input");
    if let Ok(t) = gemma_tokenizer::GemmaTokenizer::from_folder(&dir) {
        let _ = t.encode_prompt("Hello <start_of_turn>user\nworld");
        let _ = t.encode_with_special_tokens("embed me");
        let _ = t.apply_chat_template(&[gemma_tokenizer::ChatMessage::new("user", "Hi")], true);
    }
});
