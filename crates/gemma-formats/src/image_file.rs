//! Decoding an image file (PNG, JPEG, WebP, GIF's first frame) into 8-bit
//! RGB rows, as transformers loads images: the EXIF orientation applied,
//! palette and grey expanded, and an image with alpha composited over
//! white with PIL's integer arithmetic (transformers' `convert_to_rgb`). The
//! dimensions are checked before the pixels are decoded, so a
//! decompression bomb costs nothing.

use gemma_core::{GemmaError, Result};
use image::{ImageDecoder, ImageReader};
use std::io::Cursor;

/// Largest accepted side in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest accepted pixel count (PIL's decompression-bomb limit, ~89 Mpx).
pub const MAX_PIXELS: u64 = 89_478_485;

/// An 8-bit RGB image, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `[height, width, 3]`.
    pub data: Vec<u8>,
}

/// Decode `bytes` (named `what` in errors: a path or "request image 2").
pub fn decode_rgb8(bytes: &[u8], what: &str) -> Result<Rgb8> {
    let bad = |m: String| GemmaError::invalid("image", format!("{what}: {m}"));
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(e.to_string()))?;
    let Some(format) = reader.format() else { return Err(bad("not a PNG, JPEG, WebP or GIF image".into())) };
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP | image::ImageFormat::Gif) {
        return Err(bad(format!("{format:?} images are not supported (PNG, JPEG, WebP and GIF are)")));
    }
    let mut decoder = reader.into_decoder().map_err(|e| bad(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        return Err(bad(format!("{w}×{h} pixels is too large or empty (at most {MAX_SIDE} a side and {MAX_PIXELS} pixels)")));
    }
    let orientation = decoder.orientation().map_err(|e| bad(e.to_string()))?;
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| bad(e.to_string()))?;
    img.apply_orientation(orientation);
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = if img.color().has_alpha() { over_white(&img.to_rgba8().into_raw()) } else { img.to_rgb8().into_raw() };
    Ok(Rgb8 { width, height, data })
}

/// RGBA pixels composited over an opaque white background, as PIL's
/// `Image.alpha_composite` computes it (7 extra bits, rounded divisions by 255).
fn over_white(rgba: &[u8]) -> Vec<u8> {
    const BITS: u32 = 7;
    let div255 = |a: u32| ((a >> 8) + a) >> 8;
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = px[3] as u32;
        if a == 0 {
            out.extend_from_slice(&[255, 255, 255]);
            continue;
        }
        let out_a255 = a * 255 + 255 * (255 - a);
        let coef1 = a * 255 * 255 * (1 << BITS) / out_a255;
        let coef2 = 255 * (1 << BITS) - coef1;
        for &c in &px[..3] {
            out.push((div255(c as u32 * coef1 + 255 * coef2 + (0x80 << BITS)) >> BITS) as u8);
        }
    }
    out
}

/// [`decode_rgb8`] of a file.
pub fn read_rgb8(path: &std::path::Path) -> Result<Rgb8> {
    let bytes = std::fs::read(path).map_err(|e| GemmaError::io(path, e))?;
    decode_rgb8(&bytes, &path.display().to_string())
}
