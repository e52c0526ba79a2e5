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
