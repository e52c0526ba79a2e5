//! The real Gemma 3 270M Q4_K_M GGUF: exactness against transformers on the
//! same weights (tools/reference/real_model_transformers.py), and parity with
//! llama.cpp — tokenizer ids, greedy continuations, perplexity and logits —
//! against answers recorded by tools/reference/llama_cpp_parity.py, all under
//! testdata/llama_cpp/.
//!
//! llama.cpp does not compute the exact model: it quantizes activations to 8
//! bits, keeps the KV cache in f16 and takes GELU from an f16 table; on the
//! prompt of logits.safetensors its logits differ from transformers' (same
//! weights, f32) by up to 1.01 (mean 0.20), while gemma-rs with f32 weights
//! matches transformers to 1e-4. gemma-rs' GGUF path rounds as llama.cpp does
//! (`Numerics::LlamaCpp`), which matches it to ~1e-6 in the first layers, but
//! summation order still differs and 8-bit requantization amplifies that
//! through the layers — as it does inside llama.cpp, whose logits for the
//! same tokens differ by up to ~1-3 between batch and one-at-a-time
//! evaluation. The tests allow for that noise and measure it.
//!
//! The model comes from scripts/fetch-model.sh (CI runs it first). When it
//! cannot be found these tests print a loud SKIPPED line and pass; set
//! GEMMA_REQUIRE_REAL_MODEL=1 to make that a failure instead.

use gemma::{Gemma, LoadOptions, LogitsMode, SamplingParams};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/llama_cpp").join(name)
}

fn model() -> Option<&'static Gemma> {
    static MODEL: OnceLock<Option<Gemma>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = gemma::hub::default_model_path();
            if !path.is_file() {
                let msg = format!("SKIPPED: real model not found at {} — run scripts/fetch-model.sh", path.display());
                if std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_some() {
                    panic!("{msg}");
                }
                eprintln!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
                return None;
            }
            Some(Gemma::load(&path).expect("load the real model"))
        })
        .as_ref()
}

/// The near-tie threshold: a greedy step whose llama.cpp top-2
/// margin is below this may be broken either way by either engine.
const NEAR_TIE: f64 = 0.05;

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(testdata(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn tokenizer_ids_equal_llama_cpp() {
    let Some(g) = model() else { return };
    let cases = json("tokenizer.json");
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = g.encode_prompt(text).unwrap();
        assert_eq!(got, want, "ids for {text:?}");
        assert_eq!(g.tokenizer.decode(&got[1..], false).unwrap(), text, "round trip of {text:?}");
    }
    eprintln!("tokenizer: {} strings identical to llama.cpp", cases.as_array().unwrap().len());
}

/// The largest llama.cpp top-2 margin at which llama.cpp's own argmax
/// changes between evaluating a greedy continuation one token at a time
/// (`ids`) and in one batch (`batch_ids`): below this an argmax is not
/// reproducible even by llama.cpp, whose summation order differs between the
/// two.
fn llama_cpp_self_flip_margin(cases: &[Value]) -> f64 {
    let mut worst = 0f64;
    for case in cases {
        let (inc, batch) = (ids(&case["ids"]), ids(&case["batch_ids"]));
        assert_eq!(inc.len(), batch.len(), "greedy.json: batch_ids of {:?}", case["prompt"]);
        for (i, _) in inc.iter().zip(&batch).enumerate().filter(|(_, (a, b))| a != b) {
            worst = worst.max(case["margins"][i].as_f64().unwrap());
        }
    }
    worst
}

#[test]
fn greedy_continuations_equal_llama_cpp() {
    let Some(g) = model() else { return };
    let cases = json("greedy.json");
    let cases = cases.as_array().unwrap();
    let self_flip = llama_cpp_self_flip_margin(cases);
    let tie = NEAR_TIE.max(self_flip);
    eprintln!("llama.cpp batch vs one-at-a-time argmax flips at margins up to {self_flip:.3}: near-tie threshold {tie:.3}");
    let (mut same, mut total, mut strict) = (0, 0, 0);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let margins: Vec<f64> = case["margins"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect();
        let p = g.encode_prompt(prompt).unwrap();
        assert_eq!(p, ids(&case["prompt_ids"]), "prompt ids for {prompt:?}");
        let mut req = g.request(&p);
        req.params = SamplingParams::greedy();
        req.max_new_tokens = want.len();
        req.stop_ids.clear();
        let got = g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap().tokens;
        let agree = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let mut note = String::new();
        if agree < want.len() {
            let (at, min) = margins[..=agree].iter().enumerate().fold((0, f64::MAX), |b, (i, &m)| if m < b.1 { (i, m) } else { b });
            assert!(
                min < tie,
                "{prompt:?}: diverges from llama.cpp at step {agree} (llama.cpp margin {:.3}); smallest margin up to there {min:.3} >= {tie:.3}\n ours: {:?}\n llama: {:?}",
                margins[agree],
                &got[agree..],
                &want[agree..]
            );
            strict += usize::from(min >= NEAR_TIE);
            note = format!("; diverges at step {agree} after a llama.cpp margin of {min:.3} at step {at}");
        }
        eprintln!("greedy {prompt:?}: {agree}/{} tokens identical{note}", want.len());
        same += agree;
        total += want.len();
    }
    eprintln!("greedy: {same}/{total} tokens identical; {strict} prompt(s) diverge with no llama.cpp margin under {NEAR_TIE}");
}

#[test]
fn perplexity_within_half_a_percent_of_llama_cpp() {
    let Some(g) = model() else { return };
    let want = json("perplexity.json");
    let text = std::fs::read_to_string(testdata(want["file"].as_str().unwrap())).unwrap();
    let toks = g.tokenizer.encode(&text, false).unwrap();
    assert_eq!(toks.len() as u64, want["text_tokens"].as_u64().unwrap());
    let windows = gemma::windows_with_bos(&toks, g.tokenizer.bos_id, want["ctx"].as_u64().unwrap() as usize).unwrap();
    let p = gemma::perplexity(&g.model, &windows, &mut |_, _| {}).unwrap();
    let theirs = want["ppl"].as_f64().unwrap();
    let rel = (p.ppl - theirs).abs() / theirs;
    eprintln!("perplexity: gemma-rs {:.4}, llama.cpp {theirs:.4}, relative difference {:.3}%", p.ppl, rel * 100.0);
    assert_eq!(p.tokens as u64, want["tokens"].as_u64().unwrap());
    assert!(rel < 0.005, "perplexity {} vs llama.cpp {theirs}", p.ppl);
}

/// Run the prompt of a logits fixture: (prompt, our logits `[T, vocab]`,
/// the fixture's last-position logits, its top-10 ids per position).
fn run_logits_fixture(g: &Gemma, name: &str) -> (Vec<u32>, Vec<f32>, Vec<f32>, Vec<u32>) {
    let set = gemma_formats::SafetensorsSet::open_files(&[testdata(name)]).unwrap();
    let prompt: Vec<u32> = set.load_i64("prompt_ids").unwrap().into_iter().map(|x| x as u32).collect();
    let want: Vec<f32> = set.load_bytes("last_logits").unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let top10: Vec<u32> = set.load_i64("top10").unwrap().into_iter().map(|x| x as u32).collect();
    let all = g.model.forward(&prompt, &mut g.model.new_cache(), LogitsMode::All).unwrap();
    (prompt, all, want, top10)
}

#[test]
fn logits_close_to_llama_cpp() {
    let Some(g) = model() else { return };
    let (prompt, all, want, top10) = run_logits_fixture(g, "logits.safetensors");
    let vocab = g.model.config.vocab_size;
    let last = &all[(prompt.len() - 1) * vocab..];
    let max_diff = last.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let mean_diff = last.iter().zip(&want).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / vocab as f64;
    let mut overlap = 0;
    let mut top1 = 0;
    for (t, row) in all.chunks(vocab).enumerate() {
        let mut idx: Vec<u32> = (0..vocab as u32).collect();
        idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
        let theirs = &top10[t * 10..t * 10 + 10];
        overlap += idx[..10].iter().filter(|i| theirs.contains(i)).count();
        top1 += usize::from(idx[0] == theirs[0]);
    }
    let n = prompt.len();
    eprintln!(
        "logits: max |diff| {max_diff:.4}, mean |diff| {mean_diff:.4} (last position); top-1 agreement {top1}/{n}; top-10 overlap {overlap}/{}",
        10 * n
    );
    // Bounds at about llama.cpp's own distance from the exact model.
    assert!(mean_diff < 0.35 && max_diff < 2.0, "max |diff| {max_diff}, mean {mean_diff}");
    assert!(overlap * 100 >= 85 * 10 * n, "top-10 overlap {overlap}/{}", 10 * n);
    assert!(top1 + 1 >= n, "top-1 differs at {} positions", n - top1);
}

/// With weights expanded to f32, f32 activations and an f32 KV cache, the
/// forward equals transformers on the real weights.
#[test]
fn exact_path_matches_transformers_on_real_weights() {
    if model().is_none() {
        return;
    }
    let mut g =
        Gemma::load_with(gemma::hub::default_model_path(), &LoadOptions { dtype: Some(gemma::DType::F32), ..Default::default() }, &mut |_, _| {})
            .unwrap();
    g.model.numerics = gemma::Numerics::Reference;
    let (prompt, all, want, top10) = run_logits_fixture(&g, "transformers_logits.safetensors");
    let vocab = g.model.config.vocab_size;
    let last = &all[(prompt.len() - 1) * vocab..];
    let max_diff = last.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("exact path vs transformers on the real weights: max |logit diff| {max_diff:.2e}");
    assert!(max_diff < 2e-3, "max |diff| {max_diff}");
    for (t, row) in all.chunks(vocab).enumerate() {
        let best = (0..vocab).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32;
        assert_eq!(best, top10[t * 10], "argmax at position {t}");
    }
}

/// Re-quantizing the real model to Q8_0 costs little perplexity, and the file
/// loads back; `--dtype q8_0` at load time does the same in memory.
#[test]
fn requantized_real_model_keeps_its_perplexity() {
    let Some(g) = model() else { return };
    let text = std::fs::read_to_string(testdata("ppl.txt")).unwrap();
    let toks = g.tokenizer.encode(&text, false).unwrap();
    // All of ppl.txt (~1000 tokens): on fewer, the 8-bit activations' chaotic
    // rounding noise (~1% on 300 tokens) is as large as what is measured.
    let windows = gemma::windows_with_bos(&toks, g.tokenizer.bos_id, 512).unwrap();
    let base = gemma::perplexity(&g.model, &windows, &mut |_, _| {}).unwrap().ppl;
    let out = std::env::temp_dir().join(format!("gemma-real-q8-{}.gguf", std::process::id()));
    let plan = gemma::quantize::QuantPlan::parse("q8_0").unwrap();
    gemma::quantize::quantize_to_gguf(&gemma::hub::default_model_path(), &plan, &out, &mut |_, _| {}).unwrap();
    let q = Gemma::load(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let p_file = gemma::perplexity(&q.model, &windows, &mut |_, _| {}).unwrap().ppl;
    let mem =
        Gemma::load_with(gemma::hub::default_model_path(), &LoadOptions { dtype: Some(gemma::DType::Q8_0), ..Default::default() }, &mut |_, _| {})
            .unwrap();
    let p_mem = gemma::perplexity(&mem.model, &windows, &mut |_, _| {}).unwrap().ppl;
    eprintln!("perplexity ({} tokens): original {base:.3}, quantize q8_0 {p_file:.3}, --dtype q8_0 {p_mem:.3}", toks.len());
    assert!((p_file / base - 1.0).abs() < 0.02, "{p_file} vs {base}");
    assert!((p_mem - p_file).abs() < 1e-6 * p_file, "same blocks either way");
    // 4-bit at load time: 640-column matrices (the embedding, attention
    // output, FFN input) take llama.cpp's Q4_K fallback, Q5_0.
    let q4 =
        Gemma::load_with(gemma::hub::default_model_path(), &LoadOptions { dtype: Some(gemma::DType::Q4_K), ..Default::default() }, &mut |_, _| {})
            .unwrap();
    assert_eq!(q4.model.weights.embed.dtype(), gemma::DType::Q5_0);
    assert_eq!(q4.model.weights.layers[0].gate.dtype(), gemma::DType::Q5_0, "gate has 640 columns");
    assert_eq!(q4.model.weights.layers[0].down.dtype(), gemma::DType::Q4_K, "down has 2048 columns");
    let p_q4 = gemma::perplexity(&q4.model, &windows, &mut |_, _| {}).unwrap().ppl;
    eprintln!("perplexity --dtype q4_k: {p_q4:.3}");
    assert!(p_q4 / base - 1.0 < 0.15, "{p_q4} vs {base}");
}

/// `--kv-type q8_0`: keys and values in Q8_0 blocks take 34/64 of f16's
/// memory, and the real model's logits stay close to the f16 cache's (same
/// greedy choice at every position of a long prompt); models whose head
/// dims are not multiples of 32 refuse it.
#[test]
fn q8_0_kv_cache_is_close_to_f16_at_half_the_memory() {
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny-gemma3");
    let mut t = Gemma::load(&tiny).unwrap();
    let e = t.model.set_kv_type(gemma::KvType::Q8_0).unwrap_err();
    assert!(e.to_string().contains("multiples of 32"), "{e}");
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        eprintln!("\n!!!!!!!!!! SKIPPED: real model not found at {} — run scripts/fetch-model.sh !!!!!!!!!!\n", path.display());
        assert!(std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_none(), "the real model is required (GEMMA_REQUIRE_REAL_MODEL is set)");
        return;
    }
    let mut g = Gemma::load(&path).unwrap();
    let text = "The history of the city begins with a small harbor on the river, where traders from the north met fishermen from the coast. ".repeat(12);
    let ids = g.encode_prompt(&text).unwrap();
    let vocab = g.model.config.vocab_size;
    assert_eq!(g.model.kv_type(), gemma::KvType::F16);
    let mut c16 = g.model.new_cache();
    let want = g.model.forward(&ids, &mut c16, gemma::LogitsMode::All).unwrap();
    g.model.set_kv_type(gemma::KvType::Q8_0).unwrap();
    let mut c8 = g.model.new_cache();
    let got = g.model.forward(&ids, &mut c8, gemma::LogitsMode::All).unwrap();
    let ratio = c8.bytes() as f64 / c16.bytes() as f64;
    assert!((ratio - 34.0 / 64.0).abs() < 0.01, "q8_0 / f16 bytes {ratio}");
    let (mut worst, mut sum, mut agree) = (0f32, 0f64, 0);
    for (a, b) in got.chunks(vocab).zip(want.chunks(vocab)) {
        worst = worst.max(a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max));
        sum += a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>();
        agree += usize::from(gemma_generate::sampling::argmax(a) == gemma_generate::sampling::argmax(b));
    }
    let mean = sum / got.len() as f64;
    eprintln!("q8_0 KV vs f16: {} positions, greedy agrees at {agree}, logit difference mean {mean:.3} worst {worst:.3}, bytes ratio {ratio:.3}", ids.len());
    // (llama.cpp's own logits move by up to ~1-3 between batch and one-at-a-time decoding.)
    assert!(agree * 100 >= ids.len() * 98, "greedy agrees at only {agree} of {}", ids.len());
    assert!(mean < 0.3 && worst < 4.0, "mean {mean}, worst {worst}");
}
