//! PEFT LoRA adapters against transformers + peft golden logits
//! (`tools/reference/make_lora_fixture.py`), on float and quantized bases,
//! and the errors for adapters that do not fit.

use gemma::{DType, Gemma, LoadOptions, LogitsMode};
use gemma_formats::SafetensorsSet;
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn load(lora: &str, dtype: Option<DType>) -> gemma::Result<Gemma> {
    Gemma::load_with(testdata("tiny-gemma3"), &LoadOptions { dtype, lora: Some(testdata(lora)), ..Default::default() }, &mut |_, _| {})
}

fn max_diff(adapter: &str, g: &Gemma) -> f32 {
    let st = SafetensorsSet::open_files(&[testdata(adapter).join("goldens.safetensors")]).unwrap();
    let ids: Vec<u32> = st.load_i64("ids").unwrap().iter().map(|&i| i as u32).collect();
    let want = gemma_quant::to_f32_vec(&st.load("logits").unwrap().1);
    let got = g.model.forward(&ids, &mut g.model.new_cache(), LogitsMode::All).unwrap();
    assert_eq!(got.len(), want.len());
    got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn adapters_match_peft() {
    for adapter in ["tiny-gemma3-lora", "tiny-gemma3-lora-rs"] {
        let g = load(adapter, None).unwrap();
        let d = max_diff(adapter, &g);
        eprintln!("{adapter}: max |logit diff| vs transformers+peft {d:.2e}");
        assert!(d < 1e-4, "{adapter}: {d}");
        // The adapter changes the output (the test can fail).
        let base = Gemma::load(testdata("tiny-gemma3")).unwrap();
        assert!(max_diff(adapter, &base) > 1e-2, "{adapter} has no effect");
    }
    let g = load("tiny-gemma3-lora", None).unwrap();
    assert_eq!(g.model.lora.as_ref().unwrap().count(), 4 * 7);
    assert_eq!(load("tiny-gemma3-lora-rs", None).unwrap().model.lora.unwrap().count(), 4 * 2);
}

#[test]
fn adapters_work_on_converted_bases() {
    // bf16 base weights + f32 LoRA (the adapter stays exact; the base rounds).
    let g = load("tiny-gemma3-lora", Some(DType::BF16)).unwrap();
    let d = max_diff("tiny-gemma3-lora", &g);
    assert!(d < 0.5, "bf16 base: {d}");
}

#[test]
fn unfit_adapters_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("adapter_config.json"), "{err}");
    std::fs::copy(testdata("tiny-gemma3-lora/adapter_config.json"), dir.path().join("adapter_config.json")).unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("adapter_model.safetensors"), "{err}");
    // An adapter for another model size: shapes named in the error.
    let cfg = std::fs::read_to_string(testdata("tiny-gemma3-lora/adapter_config.json")).unwrap();
    std::fs::write(dir.path().join("adapter_config.json"), cfg.replace("\"use_dora\": false", "\"use_dora\": true")).unwrap();
    std::fs::copy(testdata("tiny-gemma3-lora/adapter_model.safetensors"), dir.path().join("adapter_model.safetensors")).unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("DoRA"), "{err}");
    std::fs::write(dir.path().join("adapter_config.json"), &cfg).unwrap();
    let g2 = Gemma::load_with(testdata("tiny-gemma2"), &LoadOptions { lora: Some(dir.path().to_path_buf()), ..Default::default() }, &mut |_, _| {});
    let err = g2.unwrap_err().to_string();
    assert!(err.contains("do not fit") || err.contains("layer"), "{err}");
}

fn load_dir(d: &std::path::Path) -> gemma::Result<Gemma> {
    Gemma::load_with(testdata("tiny-gemma3"), &LoadOptions { lora: Some(d.to_path_buf()), ..Default::default() }, &mut |_, _| {})
}

/// Per-request adapters: a request carrying its own adapter over the plain
/// base gives exactly what the model loaded with that adapter gives, alone
/// and in a batch that mixes adapters (and none), prefill and decode rows.
#[test]
fn per_request_adapters_equal_the_adapter_loaded_alone() {
    use gemma::{Adapter, SamplingParams};
    use gemma_model::{BatchItem, BatchWorkspace, LoraAdapter, Workspace};
    use std::sync::Arc;
    let base = Gemma::load(testdata("tiny-gemma3")).unwrap();
    let names = ["tiny-gemma3-lora", "tiny-gemma3-lora-rs"];
    let adapters: Vec<Adapter> =
        names.iter().map(|n| Adapter { name: n.to_string(), lora: Arc::new(LoraAdapter::load(&testdata(n), &base.model.config).unwrap()) }).collect();
    let prompt = base.encode_prompt("The quick brown fox").unwrap();
    // Library: generate with the per-request adapter == generate with the adapter loaded.
    let mut session = base.new_session();
    for (n, a) in names.iter().zip(&adapters) {
        let alone = load(n, None).unwrap();
        let mut req = alone.request(&prompt);
        req.params = SamplingParams::greedy();
        req.max_new_tokens = 12;
        let want = alone.generate(&mut alone.new_session(), &req, &mut |_| true).unwrap();
        req.adapter = Some(a.clone());
        // One session across adapters: its cache must not leak between them.
        let got = base.generate(&mut session, &req, &mut |_| true).unwrap();
        assert_eq!(got.tokens, want.tokens, "{n}");
        let plain = { let mut r = req.clone(); r.adapter = None; base.generate(&mut base.new_session(), &r, &mut |_| true).unwrap() };
        assert_ne!(plain.tokens, want.tokens, "{n} changes nothing: the test could not fail");
    }
    // Model: one batch of three prefills (adapter a, b, none), then three decode rows.
    let alone_logits = |a: Option<&LoraAdapter>, toks: &[u32], next: u32| {
        let (mut c, mut ws) = (base.model.new_cache(), Workspace::new());
        let first = base.model.forward_with(toks, &mut c, &mut ws, LogitsMode::Last, a).unwrap().to_vec();
        let second = base.model.forward_with(&[next], &mut c, &mut ws, LogitsMode::Last, a).unwrap().to_vec();
        (first, second)
    };
    let which: [Option<&LoraAdapter>; 3] = [Some(&adapters[0].lora), Some(&adapters[1].lora), None];
    let prompts: [&[u32]; 3] = [&prompt, &prompt[..3], &prompt[1..]];
    let mut caches: Vec<_> = (0..3).map(|_| base.model.new_cache()).collect();
    let mut ws = BatchWorkspace::default();
    let vocab = base.model.config.vocab_size;
    let mut items: Vec<BatchItem> =
        caches.iter_mut().zip(prompts).zip(which).map(|((c, p), a)| BatchItem { tokens: p, cache: c, score_from: None, last_logits: true, adapter: a, verify: false, media: &[] }).collect();
    let first = base.model.forward_batch(&mut items, &mut ws).unwrap().to_vec();
    let nexts = [5u32, 9, 11];
    let mut items: Vec<BatchItem> = caches
        .iter_mut()
        .zip(&nexts)
        .zip(which)
        .map(|((c, t), a)| BatchItem { tokens: std::slice::from_ref(t), cache: c, score_from: None, last_logits: true, adapter: a, verify: false, media: &[] })
        .collect();
    let second = base.model.forward_batch(&mut items, &mut ws).unwrap().to_vec();
    for i in 0..3 {
        let (f, s) = alone_logits(which[i], prompts[i], nexts[i]);
        assert_eq!(first[i * vocab..(i + 1) * vocab].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "prefill {i}");
        assert_eq!(second[i * vocab..(i + 1) * vocab].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "decode {i}");
    }
}
