//! llama.cpp's split form of a multimodal Gemma 3: a text GGUF plus an
//! `mmproj` GGUF. Files `gemma quantize` writes and the one llama.cpp's own
//! converter writes (testdata/tiny-gemma3-vision/mmproj-llama-cpp.gguf, from
//! tools/reference/make_tiny_mmproj_llama_cpp.sh) give the Hugging Face
//! folder's soft tokens (exactly in f32, within f16 rounding otherwise) and
//! transformers' greedy answer; wrong files are refused by name.

use gemma::{DType, Gemma, LoadOptions};
use gemma_formats::SafetensorsSet;
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

/// The fixture's folder, its model, a temporary folder and the text part written there as f32 GGUF.
fn fixture() -> (PathBuf, Gemma, tempfile::TempDir, PathBuf) {
    let dir = testdata("tiny-gemma3-vision");
    let hf = Gemma::load(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("tiny.gguf");
    gemma::quantize::write_gguf(&hf, &dir, &gemma::quantize::QuantPlan::parse("f32").unwrap(), &text, &mut |_, _| {}).unwrap();
    (dir, hf, tmp, text)
}

fn with_mmproj(text: &Path, mmproj: &Path) -> gemma_core::Result<Gemma> {
    Gemma::load_with(text, &LoadOptions { mmproj: Some(mmproj.to_path_buf()), ..Default::default() }, &mut |_, _| {})
}

fn open(p: &Path) -> gemma_formats::GgufFile {
    gemma_formats::GgufFile::open(p).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn mmproj_files_give_the_folders_soft_tokens() {
    let (dir, hf, tmp, text) = fixture();
    assert_eq!(gemma::mmproj_write::default_path(&text), tmp.path().join("mmproj-tiny.gguf"));
    let png = std::fs::read(dir.join("images/smooth_97x61.png")).unwrap();
    let want = hf.encode_image(&png, "smooth", false).unwrap().runs[0].clone();
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    // The text GGUF alone takes no images.
    assert!(!Gemma::load(&text).unwrap().takes_images());
    for (name, file, tol) in [
        ("ours, f32", Some(DType::F32), 0.0),
        ("ours, f16", Some(DType::F16), 2e-3 * scale),
        ("ours, q8_0", Some(DType::Q8_0), 2e-2 * scale),
        ("llama.cpp's converter (f16 projection)", None, 2e-3 * scale),
    ] {
        let path = match file {
            Some(t) => {
                let p = tmp.path().join(format!("mmproj-{t}.gguf"));
                gemma::mmproj_write::write_mmproj(&hf, &p, t).unwrap();
                p
            }
            None => dir.join("mmproj-llama-cpp.gguf"),
        };
        let g = with_mmproj(&text, &path).unwrap();
        assert!(g.takes_images(), "{name}");
        // The file holds epsilon in f32, the precision the tower computes it in.
        let f32_eps = |g: &Gemma| {
            let mut s = g.vision.as_ref().unwrap().spec.clone();
            if let gemma_model::towers::TowerConfig::Siglip(t) = &mut s.tower {
                t.layer_norm_eps = t.layer_norm_eps as f32 as f64;
            }
            s
        };
        assert_eq!(f32_eps(&g), f32_eps(&hf), "{name}");
        let got = g.encode_image(&png, "smooth", false).unwrap().runs[0].clone();
        let d = max_diff(&got, &want);
        eprintln!("{name}: soft tokens within {d:.2e} (largest value {scale:.2})");
        assert!(d <= tol, "{name}: {d} > {tol}");
    }
    // Written again from the GGUF pair, our mmproj has the same tensors, and
    // llama.cpp's converter's file the same names, shapes and metadata.
    let a = tmp.path().join("again.gguf");
    gemma::mmproj_write::write_mmproj(&with_mmproj(&text, &tmp.path().join("mmproj-f32.gguf")).unwrap(), &a, DType::F32).unwrap();
    let (x, y, z) = (open(&a), open(&tmp.path().join("mmproj-f32.gguf")), open(&dir.join("mmproj-llama-cpp.gguf")));
    for t in &y.header.tensors {
        let (u, w) = (x.tensor(&t.name).unwrap(), z.tensor(&t.name).unwrap_or_else(|| panic!("llama.cpp has no {}", t.name)));
        assert_eq!(x.tensor_bytes(u).as_slice(), y.tensor_bytes(t).as_slice(), "{}", t.name);
        assert_eq!(w.dims, t.dims, "{}", t.name);
    }
    assert_eq!(y.header.tensors.len(), z.header.tensors.len());
    for key in z.header.metadata.keys().filter(|k| k.starts_with("clip.")) {
        let (ours, theirs) = (y.get(key), z.get(key));
        assert_eq!(ours, theirs, "{key}");
    }
}

/// The two-image chat through the GGUF pair answers as transformers does.
#[test]
fn gguf_pair_answers_as_transformers() {
    let (dir, _hf, _tmp, text) = fixture();
    let g = with_mmproj(&text, &dir.join("mmproj-llama-cpp.gguf")).unwrap();
    let goldens = SafetensorsSet::open_files(&[dir.join("chat_goldens.safetensors")]).unwrap();
    let ids = |k: &str| -> Vec<u32> { goldens.load_i64(k).unwrap().into_iter().map(|x| x as u32).collect() };
    let images: Vec<_> = ["rgb_50x30.png", "smooth_97x61.png"].iter().map(|n| g.encode_image_file(&dir.join("images").join(n), false).unwrap()).collect();
    let mut content: Vec<serde_json::Value> = images.iter().map(|_| serde_json::json!({"type": "image"})).collect();
    content.push(serde_json::json!({"type": "text", "text": "Describe both images."}));
    let (prompt, media) = g.encode_chat_images(&serde_json::json!([{"role": "user", "content": content}]), &images, &serde_json::Map::new()).unwrap();
    assert_eq!(prompt, ids("ids"));
    let mut req = g.request(&prompt);
    req.params = gemma::SamplingParams::greedy();
    req.max_new_tokens = 8;
    req.stop_ids.clear();
    req.media = media;
    assert_eq!(g.generate(&mut g.new_session(), &req, &mut |_| true).unwrap().tokens, ids("greedy"));
}

/// Wrong files are refused by name.
#[test]
fn wrong_mmproj_files_are_refused() {
    let (dir, _hf, tmp, text) = fixture();
    // The text model given as the mmproj.
    let e = with_mmproj(&text, &text).unwrap_err().to_string();
    assert!(e.contains("general.architecture") && e.contains("gemma3"), "{e}");
    // An mmproj for a model of another width.
    let other = tmp.path().join("other.gguf");
    let small = Gemma::load(testdata("tiny-gemma3")).unwrap();
    gemma::quantize::write_gguf(&small, &testdata("tiny-gemma3"), &gemma::quantize::QuantPlan::parse("f32").unwrap(), &other, &mut |_, _| {}).unwrap();
    let e = with_mmproj(&other, &dir.join("mmproj-llama-cpp.gguf")).unwrap_err().to_string();
    assert!(e.contains("does not take images"), "{e}");
    // A truncated file.
    let bytes = std::fs::read(dir.join("mmproj-llama-cpp.gguf")).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = with_mmproj(&text, &cut).unwrap_err().to_string();
    assert!(e.contains("cut.gguf"), "{e}");
    // The writer refuses a model without a tower.
    assert!(gemma::mmproj_write::write_mmproj(&small, &tmp.path().join("x.gguf"), DType::F16).is_err());
}
