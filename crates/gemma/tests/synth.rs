//! `gemma synth`: random-weight models of a shape load in gemma-rs with the
//! shapes and types the plan gives, run to finite logits, are reproducible
//! from their seed, and are as long as announced; every published shape
//! can be described (its size computed) without memory.

use gemma::quantize::QuantPlan;
use gemma::synth::{find_variant, slug, synth, synth_len};
use gemma::variants::{Variant, VARIANTS};
use gemma::{Family, Gemma, LogitsMode};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

/// A variant row for a tiny fixture's config (the published rows are
/// hundreds of MB and up).
fn tiny_variant(folder: &str, family: Family) -> Variant {
    let text = std::fs::read_to_string(testdata(folder).join("config.json")).unwrap();
    let config: &'static str = Box::leak(text.into_boxed_str());
    let v: serde_json::Value = serde_json::from_str(config).unwrap();
    let t = v.get("text_config").unwrap_or(&v);
    Variant {
        family,
        size: "tiny",
        num_layers: t["num_hidden_layers"].as_u64().unwrap() as usize,
        hidden_size: t["hidden_size"].as_u64().unwrap() as usize,
        config,
    }
}

#[test]
fn every_family_and_type_loads_runs_and_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("tiny-gemma1", Family::Gemma1),
        ("tiny-gemma2", Family::Gemma2),
        ("tiny-gemma3", Family::Gemma3),
        ("tiny-gemma3n", Family::Gemma3n),
        ("tiny-gemma4", Family::Gemma4),
        ("tiny-gemma4-moe", Family::Gemma4),
    ];
    for (folder, family) in cases {
        let v = tiny_variant(folder, family);
        for t in ["q8_0", "q4_k_m", "bf16", "f32"] {
            let plan = QuantPlan::parse(t).unwrap();
            let out = dir.path().join(format!("{folder}-{t}.gguf"));
            let r = synth(&v, &plan, &out, 7).unwrap_or_else(|e| panic!("{folder} {t}: {e}"));
            let bytes = std::fs::read(&out).unwrap();
            assert_eq!(bytes.len() as u64, synth_len(&v, &plan).unwrap(), "{folder} {t}: announced size");
            assert_eq!(r.tensors.bytes, bytes.len() as u64);
            assert!(!dir.path().join(format!("{folder}-{t}.gguf.part")).exists());
            // The same seed writes the same file; another seed other weights.
            let again = dir.path().join("again.gguf");
            synth(&v, &plan, &again, 7).unwrap();
            assert!(std::fs::read(&again).unwrap() == bytes, "{folder} {t}: not reproducible");
            synth(&v, &plan, &again, 8).unwrap();
            assert!(std::fs::read(&again).unwrap() != bytes, "{folder} {t}: the seed changes nothing");

            let g = Gemma::load(&out).unwrap_or_else(|e| panic!("{folder} {t}: {e}"));
            let c = &g.model.config;
            let want = v.parse().unwrap();
            assert_eq!((c.family, c.num_layers(), c.hidden_size, c.vocab_size), (want.family, want.num_layers(), want.hidden_size, want.vocab_size), "{folder} {t}");
            for (l, (a, b)) in c.layers.iter().zip(&want.layers).enumerate() {
                assert_eq!((a.head_dim, a.num_kv_heads, a.intermediate_size, a.attention), (b.head_dim, b.num_kv_heads, b.intermediate_size, b.attention), "{folder} {t} layer {l}");
            }
            // Every matrix holds a type the writer reported, and the
            // embedding the plan's (or llama.cpp's fallback for its width).
            let written: Vec<String> = r.tensors.type_counts.keys().cloned().collect();
            g.model.weights.for_each_matrix(&mut |m| {
                assert!(m.rows == 0 || written.contains(&m.dtype().to_string()), "{folder} {t}: a {} matrix, written {written:?}", m.dtype());
            });
            let e = &g.model.weights.embed;
            let fb = gemma::quantize::fallback(plan.embed, e.cols);
            assert!(e.dtype() == fb || (!fb.is_quantized() && e.dtype() == plan.embed), "{folder} {t}: embedding {} for {}", e.dtype(), plan.embed);
            // It runs: finite, varied logits for a prompt (bytes fall back).
            let ids = g.tokenizer.encode("Hello, world!", true).unwrap();
            assert!(ids.len() > 2, "{folder} {t}: {ids:?}");
            let logits = g.model.forward(&ids, &mut g.model.new_cache(), LogitsMode::All).unwrap();
            assert_eq!(logits.len(), ids.len() * c.vocab_size);
            assert!(logits.iter().all(|x| x.is_finite()), "{folder} {t}: non-finite logits");
            let (lo, hi) = logits.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            assert!(hi - lo > 1e-3, "{folder} {t}: constant logits");
        }
    }
}

#[test]
fn every_published_shape_is_described_without_memory() {
    let plan = QuantPlan::parse("q4_k_m").unwrap();
    let mut names = std::collections::BTreeSet::new();
    for v in VARIANTS {
        let s = slug(v);
        assert!(names.insert(s.clone()), "two variants are named {s}");
        let f = find_variant(&s).unwrap();
        assert_eq!((f.family, f.size), (v.family, v.size), "{s}");
        let c = v.parse().unwrap();
        let len = synth_len(v, &plan).unwrap();
        // Q4_K_M: 4.5 to 8 bits per parameter, as llama.cpp's files (Q6_K
        // and Q8_0 matrices, f32 norms; the real 270M file has 7.5: its
        // 640 columns fall back to Q5_0/Q8_0 and its Q6_K embedding is 63%).
        let bits = len as f64 * 8.0 / c.parameter_count() as f64;
        assert!((4.4..8.0).contains(&bits), "{s}: {bits:.2} bits per parameter");
    }
    assert_eq!(find_variant("Gemma 3 4B").unwrap().size, "4B");
    assert_eq!(find_variant("gemma4_26b_a4b").unwrap().size, "26B-A4B");
    let e = find_variant("gemma3-5b").unwrap_err().to_string();
    assert!(e.contains("gemma3-5b") && e.contains("gemma4-31b"), "{e}");
}

#[test]
fn a_file_larger_than_the_free_space_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let v = find_variant("gemma4-31b").unwrap();
    let plan = QuantPlan::parse("f32").unwrap();
    let need = synth_len(v, &plan).unwrap();
    let free = gemma::synth::free_bytes(dir.path()).expect("free space is known on unix");
    if free > need + (2 << 30) {
        eprintln!("skipped: {} GB free holds a {} GB file", free / 1_000_000_000, need / 1_000_000_000);
        return;
    }
    let out = dir.path().join("big.gguf");
    let e = synth(v, &plan, &out, 0).unwrap_err().to_string();
    assert!(e.contains("needs") && e.contains("free"), "{e}");
    assert!(!out.exists() && !dir.path().join("big.gguf.part").exists());
}
