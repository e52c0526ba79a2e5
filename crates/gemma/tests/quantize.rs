//! `gemma quantize` round trips: a Hugging Face checkpoint written as GGUF
//! loads back with the same config and (nearly) the same logits.

use gemma::quantize::{fallback, quantize_to_gguf, Mix, QuantPlan};
use gemma::{DType, Gemma, LogitsMode};
use gemma_model::weights::Part;
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

#[test]
fn plans_and_fallbacks() {
    let p = QuantPlan::parse("Q4_K_M").unwrap();
    assert_eq!((p.base, p.mix, p.embed), (DType::Q4_K, Mix::Q6KMore, DType::Q6_K));
    // llama.cpp's per-tensor rules, on an 18-layer model with 2048-column
    // ffn_down and 640-column attn_v / attn_output (Gemma 3 270M).
    let t = |mix: &str, part, layer, cols| QuantPlan::parse(mix).unwrap().type_for(part, layer, 18, cols, 4);
    assert_eq!(t("q4_k_m", Part::Down, 0, 2048), DType::Q6_K);
    assert_eq!(t("q4_k_m", Part::Down, 3, 2048), DType::Q4_K);
    assert_eq!(t("q4_k_m", Part::Down, 4, 2048), DType::Q6_K);
    assert_eq!(t("q3_k_m", Part::Down, 0, 2048), DType::Q5_K);
    assert_eq!(t("q3_k_m", Part::Down, 1, 2048), DType::Q4_K);
    assert_eq!(t("q3_k_m", Part::O, 5, 1024), DType::Q4_K);
    assert_eq!(t("q3_k_m", Part::V, 1, 640), DType::Q5_1, "Q5_K falls back to Q5_1");
    assert_eq!(t("q3_k_m", Part::V, 2, 640), DType::Q5_0, "Q4_K falls back to Q5_0");
    assert_eq!(t("q3_k_m", Part::Gate, 2, 640), DType::Q4_0, "Q3_K falls back to Q4_0");
    assert_eq!(t("q2_k", Part::V, 7, 1024), DType::Q4_K);
    assert_eq!(t("q2_k", Part::Down, 7, 2048), DType::Q3_K);
    assert_eq!(t("q4_k_s", Part::V, 3, 1024), DType::Q5_K);
    assert_eq!(t("q4_k_s", Part::V, 4, 1024), DType::Q4_K);
    assert_eq!(t("q4_k_s", Part::Down, 2, 2048), DType::Q4_K);
    assert_eq!(t("q4_k_s", Part::Down, 1, 2048), DType::Q5_K);
    assert_eq!(t("q5_k_s", Part::Down, 0, 2048), DType::Q5_K);
    assert_eq!(QuantPlan::parse("q4_0").unwrap().embed, DType::Q6_K);
    assert_eq!(QuantPlan::parse("f16").unwrap().embed, DType::F16);
    assert_eq!(QuantPlan::parse("q8_0").unwrap().base, DType::Q8_0);
    assert!(QuantPlan::parse("q9_9").unwrap_err().to_string().contains("q9_9"));
    assert_eq!(fallback(DType::Q4_K, 640), DType::Q5_0);
    assert_eq!(fallback(DType::Q6_K, 640), DType::Q8_0);
    assert_eq!(fallback(DType::Q4_K, 1024), DType::Q4_K);
    assert_eq!(fallback(DType::Q8_0, 48), DType::F16);
}

#[test]
fn hf_checkpoint_to_gguf_and_back() {
    // f32 (with an f32 KV cache): the same model exactly; q8_0: f16 weights
    // (rows of 48 are not whole blocks), q8_0 rows, 8-bit activations and the
    // GGUF path's f16 KV cache.
    for (name, qtype, tol) in [
        ("tiny-gemma1", "f32", 1e-4),
        ("tiny-gemma2", "f32", 1e-4),
        ("tiny-gemma3", "f32", 1e-4),
        ("tiny-gemma2", "q8_0", 0.25),
        ("tiny-gemma3", "q8_0", 0.25),
    ] {
        let dir = tempfile_dir();
        let out = dir.join(format!("{name}-{qtype}.gguf"));
        let report = quantize_to_gguf(&testdata(name), &QuantPlan::parse(qtype).unwrap(), &out, &mut |_, _| {}).unwrap();
        assert!(report.tensors > 0 && report.bytes > 0);
        let hf = Gemma::load(testdata(name)).unwrap();
        let mut gg = Gemma::load(&out).unwrap();
        if qtype == "f32" {
            gg.model.numerics = gemma::Numerics::Reference;
        }
        let (a, b) = (&hf.model.config, &gg.model.config);
        assert_eq!(a.layers, b.layers, "{name}: layer pattern and RoPE survive");
        assert_eq!((a.attn_softcap, a.final_softcap, a.attn_scale), (b.attn_softcap, b.final_softcap, b.attn_scale));
        assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim, a.vocab_size), (b.num_heads, b.num_kv_heads, b.head_dim, b.vocab_size));
        assert_eq!(hf.tokenizer.vocab_size(), gg.tokenizer.vocab_size());
        assert_eq!(gg.tokenizer.bos_id, hf.tokenizer.bos_id);
        assert_eq!(hf.tokenizer.chat_template.source, gg.tokenizer.chat_template.source);
        let ids: Vec<u32> = (0..40).map(|i| 2 + (i * 37 % 400) as u32).collect();
        let x = hf.model.forward(&ids, &mut hf.model.new_cache(), LogitsMode::All).unwrap();
        let y = gg.model.forward(&ids, &mut gg.model.new_cache(), LogitsMode::All).unwrap();
        let worst = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        eprintln!("{name} {qtype}: GGUF round trip max |logit diff| {worst:.4}");
        assert!(worst < tol, "{name} {qtype}: {worst}");
    }
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gemma-quant-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
