//! `gemma merge` on every generation: a random adapter on all seven
//! projections, folded into the weights and written as a Hugging Face
//! folder (f32: the merged model must give the logits of the adapter applied
//! at run time, and hold every tensor the base checkpoint holds, under the
//! same names and shapes) and as a quantized GGUF file (which must load and
//! score close to the adapter).

use gemma::train::{LoraSpec, TrainableLora};
use gemma::{Gemma, LoadOptions, LogitsMode};
use gemma_formats::SafetensorsSet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

/// A rank-4 adapter on every projection with non-zero `B` (a fresh PEFT
/// adapter has `B = 0`, which would merge to nothing).
fn random_adapter(base: &Path, dir: &Path) {
    let g = Gemma::load(base).unwrap();
    let spec = LoraSpec { rank: 4, alpha: 8.0, rslora: false, targets: [true; 7], dropout: 0.0 };
    let mut lora = TrainableLora::init(&g.model.config, spec, 7).unwrap();
    let mut k = 0u32;
    for p in lora.layers.iter_mut().flatten().flatten() {
        for b in &mut p.b {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = ((k >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2;
        }
    }
    lora.save(dir, &base.display().to_string(), &g.model.config.architecture).unwrap();
}

fn logits(g: &Gemma) -> Vec<f32> {
    let ids: Vec<u32> = (0..24).map(|i| 2 + (i * 37) % 400).collect();
    g.model.forward(&ids, &mut g.model.new_cache(), LogitsMode::All).unwrap()
}

fn shapes(folder: &Path) -> BTreeMap<String, Vec<usize>> {
    let files: Vec<PathBuf> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("model") && n.to_string_lossy().ends_with(".safetensors"))).collect();
    let st = SafetensorsSet::open_files(&files).unwrap();
    st.tensors().map(|t| (t.name.clone(), t.shape.clone())).collect()
}

#[test]
fn merge_every_generation() {
    for name in ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma3n", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma4-unified"] {
        let base = testdata(name);
        let tmp = tempfile::tempdir().unwrap();
        let adapter = tmp.path().join("adapter");
        random_adapter(&base, &adapter);
        let with = Gemma::load_with(&base, &LoadOptions { lora: Some(adapter.clone()), ..Default::default() }, &mut |_, _| {}).unwrap();
        let want = logits(&with);
        let plain = logits(&Gemma::load(&base).unwrap());
        let moved = want.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(moved > 1e-2, "{name}: the adapter changes nothing ({moved})");

        let hf = tmp.path().join("merged");
        let r = gemma::merge::merge(&base, &adapter, &hf, "f32", gemma::merge::DEFAULT_PPL_TEXT).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.format, "hf");
        let got = logits(&Gemma::load(&hf).unwrap());
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-4, "{name}: merged f32 logits differ from the adapter's by {diff}");
        assert_eq!(shapes(&hf), shapes(&base), "{name}: the merged folder's tensors differ from the base's");

        // llama.cpp's LoRA form: the generation's architecture, one lora_a/lora_b pair per adapted projection.
        let lora_gguf = tmp.path().join("adapter.gguf");
        let n = gemma::train::export::export_gguf_lora(&adapter, &lora_gguf, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let f = gemma_formats::GgufFile::open(&lora_gguf).unwrap();
        let arch = match f.header.metadata.get("general.architecture") {
            Some(gemma_formats::GgufValue::String(s)) => s.clone(),
            other => panic!("{name}: architecture {other:?}"),
        };
        let want_arch = match with.model.config.family {
            gemma::Family::Gemma1 => "gemma",
            gemma::Family::Gemma2 => "gemma2",
            gemma::Family::Gemma3 => "gemma3",
            gemma::Family::Gemma3n => "gemma3n",
            gemma::Family::Gemma4 => "gemma4",
        };
        assert_eq!(arch, want_arch, "{name}");
        assert_eq!(n, with.model.lora.as_ref().unwrap().count(), "{name}");
        assert!(f.header.tensors.iter().any(|t| t.name == "blk.0.attn_q.weight.lora_a"), "{name}");

        let gguf = tmp.path().join("merged.gguf");
        let r = gemma::merge::merge(&base, &adapter, &gguf, "q8_0", gemma::merge::DEFAULT_PPL_TEXT).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.format, "gguf");
        let rel = (r.ppl_merged / r.ppl_adapter - 1.0).abs();
        assert!(rel < 0.05, "{name}: q8_0 merge moves perplexity by {:.2}% ({} vs {})", rel * 100.0, r.ppl_merged, r.ppl_adapter);
    }
}
