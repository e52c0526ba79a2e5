//! Gemma 3's vision tower and image prompts against transformers, on the
//! tiny random `Gemma3ForConditionalGeneration` made by
//! tools/reference/make_tiny_gemma3_vision.py.

use gemma_formats::SafetensorsSet;
use gemma_model::towers::{VisionSpec, VisionTower};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn goldens() -> SafetensorsSet {
    SafetensorsSet::open_files(&[testdata("tiny-gemma3-vision/goldens.safetensors")]).unwrap()
}

fn tensor(g: &SafetensorsSet, name: &str) -> Vec<f32> {
    gemma_quant::to_f32_vec(&g.load(name).unwrap().1)
}

fn tower() -> (VisionSpec, VisionTower) {
    let dir = testdata("tiny-gemma3-vision");
    let top: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let spec = VisionSpec::from_config(&top).unwrap().expect("a vision config");
    let set = SafetensorsSet::open_folder(&dir).unwrap();
    let tower = VisionTower::from_safetensors(&set, &spec, 48).unwrap().expect("tower weights");
    (spec, tower)
}

/// Max |a − b| over `a`, relative to the largest |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// SigLIP + projector: each image's soft tokens equal transformers'
/// `get_image_features`.
#[test]
fn image_features_equal_transformers() {
    let (spec, tower) = tower();
    assert_eq!((spec.tokens_per_image, spec.image_token, spec.boi_token, spec.eoi_token), (9, 419, 417, 418));
    let g = goldens();
    let pixels = tensor(&g, "pixel_values");
    let want = tensor(&g, "image_features");
    let per = pixels.len() / 2;
    for i in 0..2 {
        let got = tower.encode(&pixels[i * per..(i + 1) * per]).unwrap();
        let d = rel_diff(&got, &want[i * got.len()..(i + 1) * got.len()]);
        eprintln!("image {i}: soft tokens within {d:.2e} of transformers (relative to the largest)");
        assert!(d < 1e-5, "image {i}: {d}");
    }
}
