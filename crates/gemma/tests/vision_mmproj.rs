//! llama.cpp's split form of a multimodal Gemma 3 (and Gemma 4): a text GGUF plus an
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
    fixture_of("tiny-gemma3-vision")
}

/// [`fixture`] of any vision fixture.
fn fixture_of(name: &str) -> (PathBuf, Gemma, tempfile::TempDir, PathBuf) {
    let dir = testdata(name);
    let hf = Gemma::load(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("tiny.gguf");
    gemma::quantize::write_gguf(&hf, &dir, &gemma::quantize::QuantPlan::parse("f32").unwrap(), &text, &mut |_, _| {}).unwrap();
    (dir, hf, tmp, text)
}

fn with_mmproj(text: &Path, mmproj: &Path) -> gemma_core::Result<Gemma> {
    with_mmproj_tokens(text, mmproj, None)
}

fn with_mmproj_tokens(text: &Path, mmproj: &Path, image_tokens: Option<usize>) -> gemma_core::Result<Gemma> {
    Gemma::load_with(text, &LoadOptions { mmproj: Some(mmproj.to_path_buf()), image_tokens, ..Default::default() }, &mut |_, _| {})
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
    chat_equals_goldens(&g, &dir, &["rgb_50x30.png", "smooth_97x61.png"]);
}

/// The two-image chat of `images` through `g`: the fixture's
/// `chat_goldens` prompt ids and 8 greedy tokens.
fn chat_equals_goldens(g: &Gemma, dir: &Path, images: &[&str]) {
    let goldens = SafetensorsSet::open_files(&[dir.join("chat_goldens.safetensors")]).unwrap();
    let ids = |k: &str| -> Vec<u32> { goldens.load_i64(k).unwrap().into_iter().map(|x| x as u32).collect() };
    let images: Vec<_> = images.iter().map(|n| g.encode_image_file(&dir.join("images").join(n), false).unwrap()).collect();
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

/// Gemma 4: the mmproj files we write (f32, f16, q8_0 matrices) give the
/// folder's soft tokens (exactly in f32), written again from the GGUF pair
/// they are the same bytes, and the pair answers the two-image chat as
/// transformers does. The file holds no soft-token budget: the folder's 70
/// is given as `image_tokens` (1120 as well); Gemma 3 refuses one.
#[test]
fn gemma4_mmproj_files_give_the_folders_soft_tokens() {
    let (dir, hf, tmp, text) = fixture_of("tiny-gemma4-vision");
    let png = std::fs::read(dir.join("images/palette_97x61.png")).unwrap();
    let want = hf.encode_image(&png, "palette", false).unwrap().runs[0].clone();
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (t, tol) in [(DType::F32, 0.0), (DType::F16, 2e-3 * scale), (DType::Q8_0, 5e-2 * scale)] {
        let p = tmp.path().join(format!("mmproj-{t}.gguf"));
        gemma::mmproj_write::write_mmproj(&hf, &p, t).unwrap();
        let f = open(&p);
        assert_eq!(f.get("clip.vision.projector_type").and_then(gemma_formats::GgufValue::as_str), Some("gemma4v"));
        assert!(f.tensor("v.blk.1.ffn_down.output_max").is_some() && f.tensor("v.std_scale").is_some());
        let g = with_mmproj_tokens(&text, &p, Some(70)).unwrap();
        let got = g.encode_image(&png, "palette", false).unwrap().runs[0].clone();
        let d = max_diff(&got, &want);
        eprintln!("gemma 4 mmproj, {t}: soft tokens within {d:.2e} (largest value {scale:.2})");
        assert!(d <= tol, "{t}: {d} > {tol}");
    }
    let f32_file = tmp.path().join("mmproj-f32.gguf");
    let again = tmp.path().join("again.gguf");
    let pair = with_mmproj_tokens(&text, &f32_file, Some(70)).unwrap();
    gemma::mmproj_write::write_mmproj(&pair, &again, DType::F32).unwrap();
    let (x, y) = (open(&again), open(&f32_file));
    assert_eq!(x.header.tensors.len(), y.header.tensors.len());
    for t in &y.header.tensors {
        assert_eq!(x.tensor_bytes(x.tensor(&t.name).unwrap()).as_slice(), y.tensor_bytes(t).as_slice(), "{}", t.name);
    }
    // The chat through the pair: transformers' ids and greedy tokens.
    chat_equals_goldens(&pair, &dir, &["palette_97x61.png", "rgba_20x20.png"]);
    // Without the budget: transformers' default 280, more soft tokens.
    let default = with_mmproj(&text, &f32_file).unwrap();
    assert!(default.encode_image(&png, "palette", false).unwrap().runs[0].len() > want.len());
    // Bad budgets are refused by name.
    let e = with_mmproj_tokens(&text, &f32_file, Some(100)).unwrap_err().to_string();
    assert!(e.contains("image_tokens") && e.contains("100"), "{e}");
    // 1120: runs longer than one 512-token chunk, the folder's soft tokens
    // exactly, and the model's steps may now hold them.
    let large = std::fs::read(dir.join("images/large_300x200.png")).unwrap();
    let big = with_mmproj_tokens(&text, &f32_file, Some(1120)).unwrap();
    let folder = Gemma::load_with(&dir, &LoadOptions { image_tokens: Some(1120), ..Default::default() }, &mut |_, _| {}).unwrap();
    let run = big.encode_image(&large, "large", false).unwrap().runs[0].clone();
    assert_eq!(run.len() / 48, 1080);
    assert_eq!(run, folder.encode_image(&large, "large", false).unwrap().runs[0]);
    assert_eq!((big.model.config.step_limit(), folder.model.config.step_limit()), (1120, 1120));
    let (g3, _g3, _tmp3, g3_text) = fixture();
    let e = with_mmproj_tokens(&g3_text, &g3.join("mmproj-llama-cpp.gguf"), Some(280)).unwrap_err().to_string();
    assert!(e.contains("Gemma 3"), "{e}");
}
