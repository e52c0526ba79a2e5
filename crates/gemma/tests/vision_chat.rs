//! A chat turn with two images through the library, against transformers'
//! `Gemma3Processor` / `Gemma4Processor` and `generate`
//! (tools/reference/make_tiny_gemma3_vision.py, make_tiny_gemma4_vision.py):
//! the same expanded prompt ids, the same last logits, the same greedy
//! tokens; sessions reuse an image prompt only for the same images.

use gemma::Gemma;
use gemma_formats::SafetensorsSet;
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn messages(images: usize) -> serde_json::Value {
    let mut content: Vec<serde_json::Value> = (0..images).map(|_| serde_json::json!({"type": "image"})).collect();
    content.push(serde_json::json!({"type": "text", "text": "Describe both images."}));
    serde_json::json!([{"role": "user", "content": content}])
}

/// A chat turn with `images` of fixture `dir` through the library against
/// its `chat_goldens.safetensors`: transformers' processor's prompt ids,
/// `generate`'s greedy tokens and its last logits. Returns the model, the
/// ids, the media and the greedy request.
fn chat_equals_goldens(dir: &std::path::Path, images: &[&str], pan_and_scan: bool) -> (Gemma, Vec<u32>, Vec<gemma::MediaInput>, gemma::GenerateRequest) {
    let gemma = Gemma::load(dir).unwrap();
    assert!(gemma.takes_images());
    let g = SafetensorsSet::open_files(&[dir.join("chat_goldens.safetensors")]).unwrap();
    let want_ids: Vec<u32> = g.load_i64("ids").unwrap().into_iter().map(|x| x as u32).collect();
    let want_greedy: Vec<u32> = g.load_i64("greedy").unwrap().into_iter().map(|x| x as u32).collect();
    let want_last = gemma_quant::to_f32_vec(&g.load("last_logits").unwrap().1);
    let encoded: Vec<_> = images.iter().map(|n| gemma.encode_image_file(&dir.join("images").join(n), pan_and_scan).unwrap()).collect();
    let (ids, media) = gemma.encode_chat_images(&messages(images.len()), &encoded, &serde_json::Map::new()).unwrap();
    assert_eq!(ids, want_ids, "the expanded prompt differs from the processor's");

    let mut req = gemma.request(&ids);
    req.params = gemma::SamplingParams::greedy();
    req.max_new_tokens = want_greedy.len();
    req.stop_ids.clear();
    req.media = media.clone();
    let out = gemma.generate(&mut gemma.new_session(), &req, &mut |_| true).unwrap();
    assert_eq!(out.tokens, want_greedy, "greedy tokens differ from transformers' generate");

    // The last prompt position's logits.
    let mut cache = gemma.model.new_cache();
    let mut ws = gemma_model::Workspace::new();
    let m: Vec<gemma_model::Media> = media.iter().map(|m| gemma_model::Media { at: m.at, rows: &m.rows }).collect();
    let last = gemma.model.forward_media(&ids, &m, &mut cache, &mut ws, gemma_model::LogitsMode::Last, None).unwrap();
    let d = last.iter().zip(&want_last).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    eprintln!("{}: last logits within {d:.2e} of transformers", dir.display());
    assert!(d < 1e-4, "{d}");
    (gemma, ids, media, req)
}

#[test]
fn image_chat_equals_transformers() {
    let (gemma, ids, media, req) = chat_equals_goldens(&testdata("tiny-gemma3-vision"), &["rgb_50x30.png", "smooth_97x61.png"], false);
    assert_eq!(media.iter().map(|m| m.at).collect::<Vec<_>>(), vec![9, 24]);
    let want_greedy = gemma.generate(&mut gemma.new_session(), &req, &mut |_| true).unwrap().tokens;
    let mut session = gemma.new_session();
    gemma.generate(&mut session, &req, &mut |_| true).unwrap();

    // The session holds this prompt: the same images reuse it all but the
    // last token; swapping the images recomputes from the first image on.
    let again = gemma.generate(&mut session, &req, &mut |_| true).unwrap();
    assert_eq!((again.tokens, again.prompt_tokens_computed), (want_greedy.clone(), 1));
    let mut swapped = req.clone();
    swapped.media = vec![media[0].clone(), gemma::MediaInput { key: media[0].key, rows: media[0].rows.clone(), ..media[1].clone() }];
    let other = gemma.generate(&mut session, &swapped, &mut |_| true).unwrap();
    assert_eq!(other.prompt_tokens_computed, ids.len() - 24, "KV of another image was reused");
}

/// Bad image input is refused by name.
#[test]
fn bad_images_are_refused() {
    let dir = testdata("tiny-gemma3-vision");
    let gemma = Gemma::load(&dir).unwrap();
    let err = gemma.encode_image(b"not an image at all", "upload 1", false).unwrap_err().to_string();
    assert!(err.contains("upload 1"), "{err}");
    let png = std::fs::read(dir.join("images/rgb_50x30.png")).unwrap();
    let err = gemma.encode_image(&png[..png.len() / 2], "truncated.png", false).unwrap_err().to_string();
    assert!(err.contains("truncated.png"), "{err}");
    let one = gemma.encode_image(&png, "a.png", false).unwrap();
    let err = gemma.encode_chat_images(&messages(1), &[one.clone(), one], &serde_json::Map::new()).unwrap_err().to_string();
    assert!(err.contains("1 image places for 2 images"), "{err}");
    let text_only = Gemma::load(testdata("tiny-gemma3")).unwrap();
    let err = text_only.encode_image(&png, "a.png", false).unwrap_err().to_string();
    assert!(err.contains("text only"), "{err}");
}

/// Pan-and-scan: a wide image gives the original and 3 crops, the
/// processor's sentence around them, its pixel values per crop, and
/// transformers' greedy tokens; off, the same image is one run.
#[test]
fn pan_and_scan_equals_transformers() {
    let dir = testdata("tiny-gemma3-vision");
    let gemma = Gemma::load(&dir).unwrap();
    let g = SafetensorsSet::open_files(&[dir.join("pan_and_scan_goldens.safetensors")]).unwrap();
    let want_ids: Vec<u32> = g.load_i64("ids").unwrap().into_iter().map(|x| x as u32).collect();
    let want_greedy: Vec<u32> = g.load_i64("greedy").unwrap().into_iter().map(|x| x as u32).collect();
    let want_pixels = gemma_quant::to_f32_vec(&g.load("pixel_values").unwrap().1);
    let path = dir.join("images/wide_800x260.png");
    let img = gemma_formats::image_file::read_rgb8(&path).unwrap();
    let crops = gemma_model::towers::preprocess::pan_and_scan(&img, &Default::default());
    assert_eq!(crops.iter().map(|c| (c.width, c.height)).collect::<Vec<_>>(), vec![(267, 260), (267, 260), (266, 260)]);
    let per = want_pixels.len() / 4;
    for (i, view) in std::iter::once(&img).chain(&crops).enumerate() {
        let got = gemma_model::towers::preprocess::gemma3_pixels(view, 42);
        let d = got.iter().zip(&want_pixels[i * per..(i + 1) * per]).fold(0f32, |m, (a, b)| m.max((a - b).abs())) * 127.5;
        assert!(d <= 1.0 + 1e-3, "view {i}: {d} levels from the processor");
    }
    let messages = serde_json::json!([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]);
    let image = gemma.encode_image_file(&path, true).unwrap();
    assert_eq!(image.runs.len(), 4);
    let (ids, media) = gemma.encode_chat_images(&messages, &[image], &serde_json::Map::new()).unwrap();
    assert_eq!(ids, want_ids, "the pan-and-scan prompt differs from Gemma3Processor's");
    assert_eq!(media.len(), 4);
    let mut req = gemma.request(&ids);
    req.params = gemma::SamplingParams::greedy();
    req.max_new_tokens = want_greedy.len();
    req.stop_ids.clear();
    req.media = media;
    assert_eq!(gemma.generate(&mut gemma.new_session(), &req, &mut |_| true).unwrap().tokens, want_greedy);
    assert_eq!(gemma.encode_image_file(&path, false).unwrap().runs.len(), 1);
}

/// Gemma 4 (tools/reference/make_tiny_gemma4_vision.py): each image its
/// own number of soft tokens, `<|image>` … `<image|>` with nothing around;
/// pan-and-scan, Gemma 3's, asked for here changes nothing.
#[test]
fn gemma4_image_chat_equals_transformers() {
    let (_, _, media, _) = chat_equals_goldens(&testdata("tiny-gemma4-vision"), &["palette_97x61.png", "rgba_20x20.png"], true);
    assert_eq!(media.iter().map(|m| m.rows.len() / 48).collect::<Vec<_>>(), vec![60, 64]);
}

/// Gemma 4 bad input is refused by name: image places and images that
/// disagree, an image too wide for the tower's position tables.
#[test]
fn gemma4_bad_images_are_refused() {
    let dir = testdata("tiny-gemma4-vision");
    let gemma = Gemma::load(&dir).unwrap();
    let png = std::fs::read(dir.join("images/rgb_50x30.png")).unwrap();
    let one = gemma.encode_image(&png, "a.png", false).unwrap();
    let err = gemma.encode_chat_images(&messages(1), &[one.clone(), one], &serde_json::Map::new()).unwrap_err().to_string();
    assert!(err.contains("1 image places for 2 images"), "{err}");
    // 1000×10 becomes a 210×3 patch grid: past this tiny tower's 128 positions.
    let mut wide = Vec::new();
    image::RgbImage::from_pixel(1000, 10, image::Rgb([90, 20, 200])).write_to(&mut std::io::Cursor::new(&mut wide), image::ImageFormat::Png).unwrap();
    let err = gemma.encode_image(&wide, "wide.png", false).unwrap_err().to_string();
    assert!(err.contains("positions"), "{err}");
}

/// Gemma 4's 560 and 1120 budgets (`image_tokens`): an image of 532 and
/// 1080 soft tokens, longer than one 512-token chunk, gives
/// `Gemma4Processor`'s prompt ids and `generate`'s greedy tokens
/// (tools/reference/make_tiny_gemma4_budgets.py), and a session holding it
/// reuses its keys and values on the next turn.
#[test]
fn gemma4_budgets_past_one_chunk_equal_transformers() {
    let dir = testdata("tiny-gemma4-vision");
    let g = SafetensorsSet::open_files(&[dir.join("budget_goldens.safetensors")]).unwrap();
    let text = serde_json::json!([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]}]);
    for budget in [560, 1120] {
        let ids_of = |k: &str| -> Vec<u32> { g.load_i64(&format!("{budget}.{k}")).unwrap().into_iter().map(|x| x as u32).collect() };
        let options = gemma::LoadOptions { image_tokens: Some(budget), ..Default::default() };
        let gemma = Gemma::load_with(&dir, &options, &mut |_, _| {}).unwrap();
        let image = gemma.encode_image_file(&dir.join("images/large_300x200.png"), false).unwrap();
        let (ids, media) = gemma.encode_chat_images(&text, &[image], &serde_json::Map::new()).unwrap();
        assert_eq!(ids, ids_of("ids"), "{budget}: the expanded prompt differs from the processor's");
        assert!(media[0].rows.len() / 48 > gemma_model::MAX_CHUNK);
        let mut req = gemma.request(&ids);
        req.params = gemma::SamplingParams::greedy();
        req.max_new_tokens = 6;
        req.stop_ids.clear();
        req.media = media;
        let mut session = gemma.new_session();
        let out = gemma.generate(&mut session, &req, &mut |_| true).unwrap();
        assert_eq!(out.tokens, ids_of("greedy"), "{budget}: greedy differs from transformers' generate");
        let again = gemma.generate(&mut session, &req, &mut |_| true).unwrap();
        assert_eq!((again.tokens, again.prompt_tokens_computed), (out.tokens, 1), "{budget}: the session recomputed");
    }
}
