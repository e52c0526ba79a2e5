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
    assert_eq!((spec.tokens_per_image, spec.image_token, spec.boi_token, spec.eoi_token), (9, 422, 420, 421));
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

/// The prompt's ids and the positions of its image runs.
fn prompt(g: &SafetensorsSet, spec: &VisionSpec) -> (Vec<u32>, Vec<usize>) {
    let ids: Vec<u32> = g.load_i64("ids").unwrap().into_iter().map(|x| x as u32).collect();
    let starts = (0..ids.len()).filter(|&i| ids[i] == spec.image_token && (i == 0 || ids[i - 1] != spec.image_token)).collect();
    (ids, starts)
}

/// Text and two images through the language model: logits within 1e-4 of
/// transformers with `token_type_ids` (each image's tokens attend both
/// ways, also on sliding layers whose window (4) is shorter than the run
/// (9)); far from its logits without them, so a lost span fails here.
#[test]
fn image_prompt_logits_equal_transformers() {
    use gemma_model::{hf::load_model, LogitsMode, Media, Workspace};
    let (spec, tower) = tower();
    let model = load_model(&testdata("tiny-gemma3-vision"), None, &mut |_, _| {}).unwrap();
    let g = goldens();
    let (ids, starts) = prompt(&g, &spec);
    let pixels = tensor(&g, "pixel_values");
    let per = pixels.len() / 2;
    let feats: Vec<Vec<f32>> = (0..2).map(|i| tower.encode(&pixels[i * per..(i + 1) * per]).unwrap()).collect();
    let media: Vec<Media> = starts.iter().zip(&feats).map(|(&at, rows)| Media { at, rows }).collect();
    let mut cache = model.new_cache();
    let mut ws = Workspace::new();
    let got = model.forward_media(&ids, &media, &mut cache, &mut ws, LogitsMode::All, None).unwrap().to_vec();
    let (want, causal) = (tensor(&g, "logits"), tensor(&g, "logits_causal"));
    let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let apart = got.iter().zip(&causal).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("image prompt: logits within {worst:.2e} of transformers; {apart:.2} from the all-causal logits");
    assert!(worst < 1e-4, "{worst}");
    assert!(apart > 0.1, "the bidirectional spans changed nothing");

    // Cached decoding after the image prompt equals the full forward.
    let split = ids.len() - 3;
    let mut cache = model.new_cache();
    model.forward_media(&ids[..split], &media, &mut cache, &mut ws, LogitsMode::Last, None).unwrap();
    let vocab = model.config.vocab_size;
    for (t, &tok) in ids.iter().enumerate().skip(split) {
        let step = model.forward_into(&[tok], &mut cache, &mut ws, LogitsMode::Last).unwrap();
        let d = step.iter().zip(&got[t * vocab..(t + 1) * vocab]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d < 1e-5, "position {t}: cached decode differs by {d}");
    }
}

/// Media rows that do not fit the new tokens are refused by name.
#[test]
fn misplaced_media_is_refused() {
    use gemma_model::{hf::load_model, LogitsMode, Media, Workspace};
    let model = load_model(&testdata("tiny-gemma3-vision"), None, &mut |_, _| {}).unwrap();
    let rows = vec![0f32; 9 * 48];
    let mut ws = Workspace::new();
    for (media, what) in [
        (vec![Media { at: 5, rows: &rows }], "outside the new tokens"),
        (vec![Media { at: 0, rows: &rows[..47] }], "whole rows"),
        (vec![Media { at: 0, rows: &rows }, Media { at: 3, rows: &rows }], "overlap"),
    ] {
        let err = model.forward_media(&[2; 12], &media, &mut model.new_cache(), &mut ws, LogitsMode::Last, None).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
}

/// Decoding and preprocessing: PNG files of several sizes and modes (RGB,
/// RGBA, palette, grey) give exactly the 8-bit levels of transformers' PIL
/// backend, and its default torchvision backend's within one level (the two
/// backends differ by one level on the upsampled RGBA image themselves).
#[test]
fn pixel_values_equal_the_image_processors() {
    use gemma_model::towers::preprocess::gemma3_pixels;
    let g = SafetensorsSet::open_files(&[testdata("tiny-gemma3-vision/pixel_goldens.safetensors")]).unwrap();
    for name in ["rgb_50x30.png", "rgba_20x20.png", "palette_97x61.png", "gray_42x42.png", "smooth_97x61.png"] {
        let img = gemma_formats::image_file::read_rgb8(&testdata("tiny-gemma3-vision/images").join(name)).unwrap();
        let got = gemma3_pixels(&img, 42);
        let pil = tensor(&g, &format!("{name}.pil"));
        let tv = tensor(&g, &format!("{name}.torchvision"));
        let levels = |want: &[f32]| got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) * 127.5;
        let (dp, dt) = (levels(&pil), levels(&tv));
        eprintln!("{name}: {dp:.2} levels from the PIL backend, {dt:.2} from torchvision");
        // The same 8-bit levels (the PIL backend rescales then normalizes,
        // which rounds the floats differently in the last bit).
        assert!(dp < 1e-3, "{name}: {dp} levels from PIL's resampling");
        assert!(dt <= 1.0 + 1e-3, "{name}: {dt} levels from the torchvision backend");
    }
}

/// Lossy and animated formats: a JPEG within the decoders' rounding of
/// transformers' levels (PIL decodes with libjpeg-turbo, we with zune-jpeg:
/// at most 2 levels after the resize, 0.42 on average, on this photo), a
/// lossless WebP, a GIF's first frame and a WebP with EXIF orientation 6
/// (turned upright first, as transformers' `load_image` does) exactly.
#[test]
fn other_formats_decode_as_transformers_loads_them() {
    use gemma_model::towers::preprocess::gemma3_pixels;
    let g = SafetensorsSet::open_files(&[testdata("tiny-gemma3-vision/pixel_goldens.safetensors")]).unwrap();
    for (name, tolerance) in [("photo_120x80.jpg", 2.0), ("photo_120x80.webp", 0.0), ("anim_47x33.gif", 0.0), ("exif6_50x30.webp", 0.0)] {
        let img = gemma_formats::image_file::read_rgb8(&testdata("tiny-gemma3-vision/images").join(name)).unwrap();
        let got = gemma3_pixels(&img, 42);
        let pil = tensor(&g, &format!("{name}.pil"));
        let diffs: Vec<f32> = got.iter().zip(&pil).map(|(a, b)| ((a - b) * 127.5).abs()).collect();
        let worst = diffs.iter().copied().fold(0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!("{name}: worst {worst:.2} levels, mean {mean:.3} from transformers' PIL backend");
        assert!(worst <= tolerance + 1e-3, "{name}: {worst} levels");
    }
}
