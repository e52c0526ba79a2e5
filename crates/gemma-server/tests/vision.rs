//! Images over HTTP on the tiny Gemma 3 (and Gemma 4) vision fixtures: OpenAI `image_url`
//! data URLs (streamed and not) and TGI markdown images answer as
//! transformers' `generate` does (tools/reference/make_tiny_gemma3_vision.py);
//! the prefix cache never shares keys and values between two images behind
//! the same prompt text; bad images get a 400 naming the problem.

mod common;

use base64::Engine as _;
use common::*;
use gemma_engine::EngineConfig;
use gemma_formats::SafetensorsSet;
use gemma_server::ServerConfig;
use serde_json::{json, Value};

fn vision_server(engine: EngineConfig, cfg: ServerConfig) -> Server {
    start_with(testdata("tiny-gemma3-vision"), engine, cfg)
}

fn data_url(name: &str) -> String {
    let bytes = std::fs::read(testdata("tiny-gemma3-vision/images").join(name)).unwrap();
    format!("data:image/{};base64,{}", name.rsplit('.').next().unwrap(), base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn image_messages(images: &[&str], text: &str) -> Value {
    let mut content: Vec<Value> = images.iter().map(|n| json!({"type": "image_url", "image_url": {"url": data_url(n)}})).collect();
    content.push(json!({"type": "text", "text": text}));
    json!([{"role": "user", "content": content}])
}

/// transformers' prompt ids and greedy tokens for the two-image chat.
fn goldens() -> (Vec<u32>, Vec<u32>) {
    let g = SafetensorsSet::open_files(&[testdata("tiny-gemma3-vision/chat_goldens.safetensors")]).unwrap();
    let ids = |k: &str| g.load_i64(k).unwrap().into_iter().map(|x| x as u32).collect();
    (ids("ids"), ids("greedy"))
}

#[test]
fn image_chat_on_both_apis_equals_transformers() {
    let s = vision_server(EngineConfig::default(), ServerConfig::default());
    let (want_ids, want_greedy) = goldens();
    let want = s.gemma.tokenizer.decode(&want_greedy, true).unwrap();
    let body = json!({"messages": image_messages(&["rgb_50x30.png", "smooth_97x61.png"], "Describe both images."), "max_tokens": want_greedy.len(), "temperature": 0, "ignore_eos": true});
    let r = post(s.addr, "/v1/chat/completions", body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens"], want_ids.len(), "the expanded prompt differs from Gemma3Processor's");
    assert_eq!(v["choices"][0]["message"]["content"], want, "greedy differs from transformers' generate");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(s.addr, "/v1/chat/completions", streamed);
    let text: String = r.events().iter().filter(|e| *e != "[DONE]").filter_map(|e| serde_json::from_str::<Value>(e).ok()).filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(String::from)).collect();
    assert_eq!(text, want, "streamed");

    // TGI: the same turn written out, the images as markdown.
    let inputs = format!("<start_of_turn>user\n![]({})![]({})Describe both images.<end_of_turn>\n<start_of_turn>model\n", data_url("rgb_50x30.png"), data_url("smooth_97x61.png"));
    let r = post(s.addr, "/generate", json!({"inputs": inputs, "parameters": {"max_new_tokens": want_greedy.len(), "details": true, "decoder_input_details": false, "stop": []}}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    // The template writes BOS; TGI's inputs here do not: the same ids otherwise.
    assert_eq!(v["generated_text"], want);

    // The model says it takes images; the metrics count them.
    assert_eq!(get(s.addr, "/info").json()["model_pipeline_tag"], "image-text-to-text");
    let m = get(s.addr, "/v1/models").json();
    assert_eq!(m["data"][0]["input_modalities"], json!(["text", "image"]), "{m}");
    let metrics = get(s.addr, "/metrics").body;
    let encoded: u64 = metrics.lines().find_map(|l| l.strip_prefix("gemma_images_encoded_total ")).unwrap_or_else(|| panic!("{metrics}")).parse().unwrap();
    // Two images, encoded once: later requests took them from the cache.
    assert_eq!(encoded, 2, "{metrics}");
    assert!(metrics.contains("gemma_image_encode_seconds_total "), "{metrics}");
}

/// Two different images behind the same prompt text never share keys and
/// values in the prefix cache; the same image does.
#[test]
fn prefix_cache_keys_on_the_image() {
    let cfg = |bytes| EngineConfig { prefill_chunk: 4, prefix_cache_bytes: bytes, ..EngineConfig::default() };
    let (on, off) = (vision_server(cfg(64 << 20), ServerConfig::default()), vision_server(cfg(0), ServerConfig::default()));
    let ask = |s: &Server, image: &str| {
        let body = json!({"messages": image_messages(&[image], "What is in this picture? Answer briefly."), "max_tokens": 6, "temperature": 0, "logprobs": true, "ignore_eos": true});
        let r = post(s.addr, "/v1/chat/completions", body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let a = ask(&on, "rgb_50x30.png");
    let b = ask(&on, "gray_42x42.png");
    // The image run starts at 9 (after `<bos><start_of_turn>user\n\n\n<start_of_image>`): nothing after it is shared.
    let cached = b["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached <= 9, "keys and values of another image were reused: {cached} cached tokens");
    assert_eq!(b["choices"], ask(&off, "gray_42x42.png")["choices"], "with the cache");
    assert_ne!(a["choices"][0]["logprobs"], b["choices"][0]["logprobs"], "two images gave the same answer");
    // The same image again reuses past its run, with the same answer.
    let again = ask(&on, "rgb_50x30.png");
    assert!(again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 9 + 9, "{}", again["usage"]);
    assert_eq!(again["choices"], a["choices"]);
}

/// Images per request: pan-and-scan from `mm_processor_kwargs` adds the
/// crops' runs; bad images and bad requests get 400s naming the problem.
#[test]
fn image_options_and_bad_images() {
    let s = vision_server(EngineConfig { max_images: 2, ..EngineConfig::default() }, ServerConfig::default());
    let ask = |messages: Value, extra: Value| {
        let mut body = json!({"messages": messages, "max_tokens": 2, "temperature": 0});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post(s.addr, "/v1/chat/completions", body)
    };
    let plain = ask(image_messages(&["wide_800x260.png"], "Hi"), json!({}));
    let pas = ask(image_messages(&["wide_800x260.png"], "Hi"), json!({"mm_processor_kwargs": {"do_pan_and_scan": true}}));
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(pas.status, 200, "{}", pas.body);
    let tokens = |r: &Resp| r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    // The original and 3 crops, each 9 soft tokens with its marks, and the processor's sentence.
    assert!(tokens(&pas) > tokens(&plain) + 3 * 9, "{} vs {}", tokens(&pas), tokens(&plain));

    let png = std::fs::read(testdata("tiny-gemma3-vision/images/rgb_50x30.png")).unwrap();
    let truncated = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png[..png.len() / 2]));
    let part = |url: &str| json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Hi"}]}]);
    for (messages, extra, says) in [
        (part(&truncated), json!({}), "image 0"),
        (part("data:image/png;base64,bm90IGFuIGltYWdl"), json!({}), "image 0"),
        (part("data:image/png;base64,@@"), json!({}), "not valid base64"),
        (part("https://example.com/cat.png"), json!({}), "remote image URLs are off"),
        (image_messages(&["rgb_50x30.png", "rgb_50x30.png", "gray_42x42.png"], "Hi"), json!({}), "more than the 2"),
        (image_messages(&["rgb_50x30.png"], "Hi"), json!({"mm_processor_kwargs": {"num_crops": 2}}), "num_crops"),
        (json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url("rgb_50x30.png")}}, {"type": "text", "text": "<start_of_image>"}]}]), json!({}), "image places"),
    ] {
        let r = ask(messages, extra);
        assert_eq!(r.status, 400, "{says}: {}", r.body);
        assert!(r.body.contains(says), "{says}: {}", r.body);
    }
    // The server still answers.
    assert_eq!(ask(image_messages(&["gray_42x42.png"], "Hi"), json!({})).status, 200);

    // A text-only model refuses image parts by name.
    let text = server();
    let r = post(text.addr, "/v1/chat/completions", json!({"messages": image_messages(&["rgb_50x30.png"], "Hi"), "max_tokens": 2}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("text only"), "{}", r.body);
}

/// Gemma 4 (tools/reference/make_tiny_gemma4_vision.py): each image gets its
/// own number of soft tokens (60 and 64 here); OpenAI `image_url` data URLs,
/// streamed and not, and TGI markdown images answer as transformers'
/// `Gemma4Processor` + `generate` do.
#[test]
fn gemma4_image_chat_equals_transformers() {
    let dir = testdata("tiny-gemma4-vision");
    let s = start_with(dir.clone(), EngineConfig::default(), ServerConfig::default());
    let g = SafetensorsSet::open_files(&[dir.join("chat_goldens.safetensors")]).unwrap();
    let ids = |k: &str| -> Vec<u32> { g.load_i64(k).unwrap().into_iter().map(|x| x as u32).collect() };
    let (want_ids, want_greedy) = (ids("ids"), ids("greedy"));
    let want = s.gemma.tokenizer.decode(&want_greedy, true).unwrap();
    let url = |name: &str| {
        let bytes = std::fs::read(dir.join("images").join(name)).unwrap();
        format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let content = json!([{"type": "image_url", "image_url": {"url": url("palette_97x61.png")}}, {"type": "image_url", "image_url": {"url": url("rgba_20x20.png")}}, {"type": "text", "text": "Describe both images."}]);
    let body = json!({"messages": [{"role": "user", "content": content}], "max_tokens": want_greedy.len(), "temperature": 0, "ignore_eos": true});
    let r = post(s.addr, "/v1/chat/completions", body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens"], want_ids.len(), "the expanded prompt differs from Gemma4Processor's");
    assert_eq!(v["choices"][0]["message"]["content"], want, "greedy differs from transformers' generate");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let r = post(s.addr, "/v1/chat/completions", streamed);
    let text: String = r.events().iter().filter(|e| *e != "[DONE]").filter_map(|e| serde_json::from_str::<Value>(e).ok()).filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(String::from)).collect();
    assert_eq!(text, want, "streamed");
    let inputs = format!("<|turn>user\n![]({})![]({})Describe both images.<turn|>\n<|turn>model\n", url("palette_97x61.png"), url("rgba_20x20.png"));
    let r = post(s.addr, "/generate", json!({"inputs": inputs, "parameters": {"max_new_tokens": want_greedy.len(), "stop": []}}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["generated_text"], want, "TGI");
}

/// Gemma 4 with a 1120-token budget (the folder's
/// `preprocessor_config.json`): the image's 1080 soft tokens, more than
/// one 512-token chunk, go through the engine's batched steps whole; two
/// requests at once answer as transformers does
/// (tools/reference/make_tiny_gemma4_budgets.py).
#[test]
fn gemma4_budget_1120_on_the_server_equals_transformers() {
    let src = testdata("tiny-gemma4-vision");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut pre: Value = serde_json::from_str(&std::fs::read_to_string(src.join("preprocessor_config.json")).unwrap()).unwrap();
    pre["max_soft_tokens"] = json!(1120);
    std::fs::write(tmp.path().join("preprocessor_config.json"), pre.to_string()).unwrap();
    let s = start_with(tmp.path().to_path_buf(), EngineConfig::default(), ServerConfig::default());
    let g = SafetensorsSet::open_files(&[src.join("budget_goldens.safetensors")]).unwrap();
    let ids = |k: &str| -> Vec<u32> { g.load_i64(k).unwrap().into_iter().map(|x| x as u32).collect() };
    let (want_ids, want_greedy) = (ids("1120.ids"), ids("1120.greedy"));
    let want = s.gemma.tokenizer.decode(&want_greedy, true).unwrap();
    let bytes = std::fs::read(src.join("images/large_300x200.png")).unwrap();
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    let content = json!([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is in this picture?"}]);
    let body = json!({"messages": [{"role": "user", "content": content}], "max_tokens": want_greedy.len(), "temperature": 0, "ignore_eos": true});
    let addr = s.addr;
    let both: Vec<_> = (0..2).map(|_| {
        let body = body.clone();
        std::thread::spawn(move || post(addr, "/v1/chat/completions", body))
    }).collect();
    for r in both {
        let r = r.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["usage"]["prompt_tokens"], want_ids.len(), "the expanded prompt differs from Gemma4Processor's");
        assert_eq!(v["choices"][0]["message"]["content"], want, "greedy differs from transformers' generate");
    }
}
