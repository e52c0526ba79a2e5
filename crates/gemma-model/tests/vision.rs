//! Gemma 3's and Gemma 4's vision towers, preprocessing and image prompts
//! against transformers, on the tiny random `Gemma3ForConditionalGeneration`
//! and `Gemma4ForConditionalGeneration` made by
//! tools/reference/make_tiny_gemma3_vision.py and make_tiny_gemma4_vision.py.

use gemma_formats::SafetensorsSet;
use gemma_model::towers::{PatchInput, TowerConfig, TowerInput, VisionSpec, VisionTower};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn goldens() -> SafetensorsSet {
    goldens_of("tiny-gemma3-vision", "goldens.safetensors")
}

fn goldens_of(fixture: &str, file: &str) -> SafetensorsSet {
    SafetensorsSet::open_files(&[testdata(fixture).join(file)]).unwrap()
}

fn tensor(g: &SafetensorsSet, name: &str) -> Vec<f32> {
    gemma_quant::to_f32_vec(&g.load(name).unwrap().1)
}

fn tower() -> (VisionSpec, VisionTower) {
    tower_of("tiny-gemma3-vision")
}

/// The vision spec and tower of a fixture (text width 48).
fn tower_of(fixture: &str) -> (VisionSpec, VisionTower) {
    let dir = testdata(fixture);
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
        let got = tower.encode(&TowerInput::Square(pixels[i * per..(i + 1) * per].to_vec())).unwrap();
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
    use gemma_model::{hf::load_model, Media};
    let (spec, tower) = tower();
    let model = load_model(&testdata("tiny-gemma3-vision"), None, &mut |_, _| {}).unwrap();
    let g = goldens();
    let (ids, starts) = prompt(&g, &spec);
    let pixels = tensor(&g, "pixel_values");
    let per = pixels.len() / 2;
    let feats: Vec<Vec<f32>> = (0..2).map(|i| tower.encode(&TowerInput::Square(pixels[i * per..(i + 1) * per].to_vec())).unwrap()).collect();
    let media: Vec<Media> = starts.iter().zip(&feats).map(|(&at, rows)| Media { at, rows }).collect();
    logits_equal_goldens(&model, &ids, &media, &g);
}

/// The full forward of `ids` with `media` against the goldens' `logits`
/// (within 1e-4) and far from `logits_causal` (so a lost span fails); then
/// cached decoding after the image prompt equals the full forward.
fn logits_equal_goldens(model: &gemma_model::Model, ids: &[u32], media: &[gemma_model::Media], g: &SafetensorsSet) {
    use gemma_model::{LogitsMode, Workspace};
    let mut ws = Workspace::new();
    let got = model.forward_media(ids, media, &mut model.new_cache(), &mut ws, LogitsMode::All, None).unwrap().to_vec();
    let (want, causal) = (tensor(g, "logits"), tensor(g, "logits_causal"));
    let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let apart = got.iter().zip(&causal).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("image prompt: logits within {worst:.2e} of transformers; {apart:.2} from the all-causal logits");
    assert!(worst < 1e-4, "{worst}");
    assert!(apart > 0.1, "the bidirectional spans changed nothing");
    let split = ids.len() - 3;
    let mut cache = model.new_cache();
    model.forward_media(&ids[..split], media, &mut cache, &mut ws, LogitsMode::Last, None).unwrap();
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

// Gemma 4 (tools/reference/make_tiny_gemma4_vision.py): clipped linears and
// standardization on, `use_bidirectional_attention: "vision"`, a sliding
// window of 4 against image runs of 60 and 64 soft tokens.
const G4: &str = "tiny-gemma4-vision";

/// Image `i` of the goldens as the tower takes it: the processor's
/// padded `[630, 48]` patches cut to the real ones (position ≠ −1).
fn golden_input(g: &SafetensorsSet, i: usize) -> PatchInput {
    let pixels = tensor(g, &format!("pixel_values_{i}"));
    let pos = g.load_i64(&format!("position_ids_{i}")).unwrap();
    let per = pixels.len() / (pos.len() / 2);
    let mut input = PatchInput::default();
    for (r, p) in pos.chunks_exact(2).enumerate() {
        if p[0] >= 0 {
            input.patches.extend_from_slice(&pixels[r * per..(r + 1) * per]);
            input.positions.push([p[0] as usize, p[1] as usize]);
        }
    }
    input
}

/// The tower and embedder: each image's soft tokens equal transformers'
/// `get_image_features` (60 and 64 tokens: two shapes, one budget).
#[test]
fn gemma4_image_features_equal_transformers() {
    let (spec, tower) = tower_of(G4);
    assert_eq!((spec.tokens_per_image, spec.image_token, spec.boi_token, spec.eoi_token), (280, 422, 420, 421));
    assert!(matches!(&spec.tower, TowerConfig::Gemma4(c) if c.use_clipped_linears && c.standardize));
    let g = goldens_of(G4, "goldens.safetensors");
    let counts = g.load_i64("num_soft_tokens").unwrap();
    for (i, &count) in counts.iter().enumerate() {
        let got = tower.encode(&TowerInput::Patches(golden_input(&g, i))).unwrap();
        let want = tensor(&g, &format!("image_features_{i}"));
        assert_eq!(got.len(), count as usize * 48, "image {i}");
        let d = rel_diff(&got, &want);
        eprintln!("image {i}: {count} soft tokens within {d:.2e} of transformers (relative to the largest)");
        assert!(d < 1e-4, "image {i}: {d}");
    }
}

/// Text and two images through the language model: logits within 1e-4 of
/// transformers with `mm_token_type_ids` (image tokens attend both ways on
/// the sliding layers only, the window (4) shorter than the runs); far from
/// its all-causal logits, so a lost span fails here.
#[test]
fn gemma4_image_prompt_logits_equal_transformers() {
    use gemma_model::{hf::load_model, Media};
    let (spec, tower) = tower_of(G4);
    let model = load_model(&testdata(G4), None, &mut |_, _| {}).unwrap();
    let g = goldens_of(G4, "goldens.safetensors");
    let ids: Vec<u32> = g.load_i64("ids").unwrap().into_iter().map(|x| x as u32).collect();
    let starts: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == spec.image_token && (i == 0 || ids[i - 1] != spec.image_token)).collect();
    let feats: Vec<Vec<f32>> = (0..2).map(|i| tower.encode(&TowerInput::Patches(golden_input(&g, i))).unwrap()).collect();
    let media: Vec<Media> = starts.iter().zip(&feats).map(|(&at, rows)| Media { at, rows }).collect();
    logits_equal_goldens(&model, &ids, &media, &g);
}

/// Decoding and preprocessing: PNG files of several sizes, modes and
/// aspect ratios (RGB, RGBA, palette, grey; wide, tall, downscaled, a 5×5
/// upscaled) give exactly the resized size, patch positions and 8-bit
/// levels of transformers' `Gemma4ImageProcessorPil` (PIL's bicubic).
#[test]
fn gemma4_preprocessing_equals_transformers() {
    use gemma_model::towers::preprocess::gemma4_patches;
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata(G4).join("pixel_goldens.json")).unwrap()).unwrap();
    let g = goldens_of(G4, "pixel_goldens.safetensors");
    let images = meta["images"].as_object().unwrap();
    assert!(images.len() >= 8);
    for (name, m) in images {
        let bytes = std::fs::read(testdata(G4).join("images").join(name)).unwrap();
        let img = gemma_formats::image_file::decode_rgb8(&bytes, name).unwrap();
        let got = gemma4_patches(&img, 4, 70, 3).unwrap();
        let levels = g.load_bytes(&format!("{name}.pixel_levels")).unwrap();
        let pos = g.load_i64(&format!("{name}.position_ids")).unwrap();
        let want_pos: Vec<[usize; 2]> = pos.chunks_exact(2).map(|p| [p[0] as usize, p[1] as usize]).collect();
        assert_eq!(got.positions, want_pos, "{name}: positions");
        assert_eq!(got.positions.len() / 9, m["num_soft_tokens"].as_u64().unwrap() as usize, "{name}");
        let off = got.patches.iter().zip(&levels).filter(|(v, &l)| **v != l as f32 / 255.0).count();
        assert_eq!(got.patches.len(), levels.len(), "{name}");
        assert_eq!(off, 0, "{name}: {off} values differ from transformers'");
    }
}

/// Sizes the processor picks, including the edge rules (a side that rounds
/// to nothing gets one pooling window; an image too small for anything).
#[test]
fn gemma4_resize_rules_follow_transformers() {
    use gemma_model::towers::preprocess::gemma4_size;
    // (h, w) → (h, w) at patch 16, k 3, 280 soft tokens (2520 patches).
    assert_eq!(gemma4_size(480, 640, 16, 2520, 3), Ok((672, 912)));
    assert_eq!(gemma4_size(1000, 1000, 16, 2520, 3), Ok((768, 768)));
    // Extremely wide: the height rounds to 0, so it is one window (48) and
    // the width the aspect ratio's whole part of windows, capped at 280 windows.
    assert_eq!(gemma4_size(10, 5000, 16, 2520, 3), Ok((48, 280 * 48)));
    assert_eq!(gemma4_size(5000, 10, 16, 2520, 3), Ok((280 * 48, 48)));
    assert!(gemma4_size(0, 100, 16, 2520, 3).is_err() && gemma4_size(100, 0, 16, 2520, 3).is_err());
}

/// Gemma 4's 560 and 1120 soft-token budgets: an image run longer than one
/// 512-token chunk stays one forward step (the sliding rings grow to hold
/// it), and equals transformers: preprocessing (patch count, level sum),
/// features, logits inside and after the run, cached greedy decode. Without
/// room for it (`media_run` unset) the run is refused by name.
#[test]
fn gemma4_budgets_past_one_chunk_equal_transformers() {
    use gemma_model::towers::preprocess::gemma4_patches;
    use gemma_model::{hf::load_model, LogitsMode, Media, Workspace};
    let (_, tower) = tower_of(G4);
    let g = goldens_of(G4, "budget_goldens.safetensors");
    let bytes = std::fs::read(testdata(G4).join("images/large_300x200.png")).unwrap();
    let img = gemma_formats::image_file::decode_rgb8(&bytes, "large_300x200.png").unwrap();
    for budget in [560usize, 1120] {
        let key = |k: &str| format!("{budget}.{k}");
        let input = gemma4_patches(&img, 4, budget, 3).unwrap();
        let n = input.positions.len() / 9;
        assert!(n > gemma_model::MAX_CHUNK, "{budget}: {n} soft tokens fit one chunk");
        assert_eq!(input.positions.len() as i64, g.load_i64(&key("patches")).unwrap()[0], "{budget}: patches");
        let level_sum: i64 = input.patches.iter().map(|v| (v * 255.0).round() as i64).sum();
        assert_eq!(level_sum, g.load_i64(&key("level_sum")).unwrap()[0], "{budget}: 8-bit levels");
        let feats = tower.encode(&TowerInput::Patches(input)).unwrap();
        let (rows, want) = (g.load_i64(&key("feature_rows")).unwrap(), tensor(&g, &key("features")));
        let got: Vec<f32> = rows.iter().flat_map(|&r| feats[r as usize * 48..(r as usize + 1) * 48].to_vec()).collect();
        let d = rel_diff(&got, &want);
        assert!(d < 1e-4, "{budget}: features {d}");

        let ids: Vec<u32> = g.load_i64(&key("ids")).unwrap().into_iter().map(|x| x as u32).collect();
        let at = ids.iter().position(|&t| t == 422).unwrap();
        let media = [Media { at, rows: &feats }];
        let mut model = load_model(&testdata(G4), None, &mut |_, _| {}).unwrap();
        let mut ws = Workspace::new();
        let err = model.forward_media(&ids, &media, &mut model.new_cache(), &mut ws, LogitsMode::Last, None).unwrap_err().to_string();
        assert!(err.contains(&format!("a run of {n} rows")) && err.contains("512"), "{err}");
        model.config.media_run = n;
        let all = model.forward_media(&ids, &media, &mut model.new_cache(), &mut ws, LogitsMode::All, None).unwrap().to_vec();
        let vocab = model.config.vocab_size;
        let (lrows, want) = (g.load_i64(&key("logit_rows")).unwrap(), tensor(&g, &key("logits")));
        let got: Vec<f32> = lrows.iter().flat_map(|&r| all[r as usize * vocab..(r as usize + 1) * vocab].to_vec()).collect();
        let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("budget {budget}: {n} soft tokens, features within {d:.2e}, logits within {worst:.2e} of transformers");
        assert!(worst < 1e-4, "{budget}: logits {worst}");
        // Greedy through the cache after the long step (short text chunks
        // before it, one token at a time after it).
        let mut cache = model.new_cache();
        model.forward_media(&ids[..at], &[], &mut cache, &mut ws, LogitsMode::Last, None).unwrap();
        let mut last = model.forward_media(&ids[at..], &media, &mut cache, &mut ws, LogitsMode::Last, None).unwrap().to_vec();
        let mut greedy = Vec::new();
        for _ in 0..6 {
            let t = (0..vocab).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
            greedy.push(t as i64);
            last = model.forward_into(&[t], &mut cache, &mut ws, LogitsMode::Last).unwrap().to_vec();
        }
        assert_eq!(greedy, g.load_i64(&key("greedy")).unwrap(), "{budget}: greedy");
    }
}
