//! Image preprocessing as transformers' Gemma 3 and Gemma 4 image
//! processors do it: PIL's antialiased resampling (separable, 8-bit
//! intermediate, 22-bit fixed-point weights, Pillow 13's pass order) —
//! Gemma 3 a square bilinear resize, rescaled and normalized (mean 0.5,
//! std 0.5) into `[3, S, S]` floats; Gemma 4 an aspect-preserving bicubic
//! resize to its patch budget, rescaled into patches with their positions.

use gemma_formats::image_file::Rgb8;

/// Fixed-point bits of the resampling weights (PIL: 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

/// A PIL resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `BILINEAR`: the triangle, support 1.
    Bilinear,
    /// `BICUBIC`: Keys' cubic with a = −0.5, support 2.
    Bicubic,
}

impl Filter {
    /// The filter's support at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// The filter's value at `x`.
    fn at(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Bicubic if x < 1.0 => ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0,
            Filter::Bicubic if x < 2.0 => (((x - 5.0) * x + 8.0) * x - 4.0) * A,
            _ => 0.0,
        }
    }
}

/// PIL's bicubic parameter.
const A: f64 = -0.5;

/// For each output index: the first input index, and the fixed-point
/// weights of the inputs from there (PIL's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero; then clamped to the image.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| filter.at((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u64 << PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// `Σ pixel·k` rounded back to 8 bits, clamped.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One resampling pass over `src` (`w × h` RGB): along rows (`horizontal`,
/// to `out` columns) or along columns (to `out` rows), rounded to 8 bits.
fn pass(src: &[u8], w: usize, h: usize, out: usize, horizontal: bool, filter: Filter) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let (n_in, lines) = if horizontal { (w, h) } else { (h, w) };
    let coeffs = coefficients(n_in, out, filter);
    // Element `i` of line `l` (a row or a column), channel `c`.
    let at = |l: usize, i: usize, c: usize| if horizontal { (l * w + i) * 3 + c } else { (i * w + l) * 3 + c };
    let (ow, oh) = if horizontal { (out, h) } else { (w, out) };
    let mut dst = vec![0u8; ow * oh * 3];
    for l in 0..lines {
        for (o, (first, k)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                let acc = k.iter().enumerate().fold(half, |a, (j, &kk)| a + src[at(l, first + j, c)] as i64 * kk as i64);
                let d = if horizontal { (l * ow + o) * 3 + c } else { (o * ow + l) * 3 + c };
                dst[d] = clip8(acc);
            }
        }
    }
    dst
}

/// Resize to `out_w × out_h` with PIL's `Image.resize(…, BILINEAR)`.
pub fn resize_bilinear(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    resize(img, out_w, out_h, Filter::Bilinear)
}

/// Resize to `out_w × out_h` with PIL's `Image.resize(…, filter)`: two
/// separable passes with an 8-bit image between them, the horizontal one
/// first unless the height shrinks by more than twice the pixels the width
/// does (Pillow 13's order — "if height is scaled down significantly more
/// than width, resize vertically first" — which decides the last bit;
/// measured against Pillow 13.0 on 700 random sizes, both filters).
pub fn resize(img: &Rgb8, out_w: usize, out_h: usize, filter: Filter) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let vertical_first = out_h < h && (h - out_h) as i64 > 2 * (w as i64 - out_w as i64);
    let data = match (w != out_w, h != out_h) {
        (false, false) => img.data.clone(),
        (true, false) => pass(&img.data, w, h, out_w, true, filter),
        (false, true) => pass(&img.data, w, h, out_h, false, filter),
        (true, true) if vertical_first => pass(&pass(&img.data, w, h, out_h, false, filter), w, out_h, out_w, true, filter),
        (true, true) => pass(&pass(&img.data, w, h, out_w, true, filter), out_w, h, out_h, false, filter),
    };
    Rgb8 { width: out_w, height: out_h, data }
}

/// Gemma 3's pan-and-scan settings (transformers' defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanAndScan {
    /// Smallest crop side in pixels.
    pub min_crop_size: usize,
    /// Most crops per image.
    pub max_crops: usize,
    /// Aspect ratio (long side / short side) from which an image is cropped.
    pub min_ratio: f64,
}

impl Default for PanAndScan {
    fn default() -> Self {
        Self { min_crop_size: 256, max_crops: 4, min_ratio: 1.2 }
    }
}

/// The crops Gemma 3's pan-and-scan cuts from an elongated image (none for
/// one too square or too small): 2 to `max_crops` equal slices along the
/// long side, about as many as the aspect ratio (the last one narrower
/// where the side does not divide), each at least `min_crop_size` a side.
pub fn pan_and_scan(img: &Rgb8, p: &PanAndScan) -> Vec<Rgb8> {
    let (w, h) = (img.width, img.height);
    let count = |long: usize, short: usize| -> Option<usize> {
        if (long as f64 / short as f64) < p.min_ratio {
            return None;
        }
        let n = ((long as f64 / short as f64 + 0.5).floor() as usize).min(long / p.min_crop_size.max(1));
        Some(n.max(2).min(p.max_crops))
    };
    let (nw, nh) = match if w >= h { count(w, h).map(|n| (n, 1)) } else { count(h, w).map(|n| (1, n)) } {
        Some(n) => n,
        None => return Vec::new(),
    };
    let (cw, ch) = (w.div_ceil(nw), h.div_ceil(nh));
    if cw.min(ch) < p.min_crop_size {
        return Vec::new();
    }
    let mut crops = Vec::with_capacity(nw * nh);
    for y0 in (0..nh).map(|i| i * ch) {
        for x0 in (0..nw).map(|i| i * cw) {
            let (cw, ch) = (cw.min(w - x0), ch.min(h - y0));
            let mut data = Vec::with_capacity(cw * ch * 3);
            for y in y0..y0 + ch {
                data.extend_from_slice(&img.data[(y * w + x0) * 3..(y * w + x0 + cw) * 3]);
            }
            crops.push(Rgb8 { width: cw, height: ch, data });
        }
    }
    crops
}

/// Gemma 3's pixel values of `img` at `size × size`: `[3, size, size]`,
/// each `(v − 127.5) / 127.5` (rescale by 1/255, then mean 0.5 and std 0.5,
/// fused as transformers' default backend computes it).
pub fn gemma3_pixels(img: &Rgb8, size: usize) -> Vec<f32> {
    let r = if (img.width, img.height) == (size, size) { img.clone() } else { resize_bilinear(img, size, size) };
    let mut out = vec![0f32; 3 * size * size];
    for (i, px) in r.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * size * size + i] = (px[c] as f32 - 127.5) / 127.5;
        }
    }
    out
}

/// The size Gemma 4's processor resizes an `h × w` image to: the largest
/// `(height, width)`, both multiples of `k · patch`, that keeps the aspect
/// ratio within `max_patches` patches (a side that would round to nothing
/// gets one window, the other side the aspect ratio's whole part of
/// windows, capped) — transformers' `get_aspect_ratio_preserving_size`.
pub fn gemma4_size(h: usize, w: usize, patch: usize, max_patches: usize, k: usize) -> Result<(usize, usize), String> {
    if h == 0 || w == 0 || patch == 0 || k == 0 || max_patches == 0 {
        return Err(format!("a {w}×{h} image at patch {patch}, pooling {k} and {max_patches} patches has no size"));
    }
    let target_px = (max_patches * patch * patch) as f64;
    let factor = (target_px / (h * w) as f64).sqrt();
    let side = k * patch;
    let mut th = (factor * h as f64 / side as f64).floor() as usize * side;
    let mut tw = (factor * w as f64 / side as f64).floor() as usize * side;
    if th == 0 && tw == 0 {
        return Err(format!("a {w}×{h} image would be resized to nothing"));
    }
    let max_side = (max_patches / (k * k)) * side;
    if th == 0 {
        th = side;
        tw = ((w / h) * side).min(max_side);
    } else if tw == 0 {
        tw = side;
        th = ((h / w) * side).min(max_side);
    }
    if (th * tw) as f64 > target_px {
        return Err(format!("a {w}×{h} image resized to {tw}×{th} exceeds {max_patches} patches"));
    }
    Ok((th, tw))
}

/// Gemma 4's input of `img`: resized (bicubic) as [`gemma4_size`] says for
/// `max_soft_tokens · k²` patches, rescaled by 1/255, cut into
/// `patch × patch` patches in row-major order (each row in (y, x, channel)
/// order) with their `(x, y)` — the real patches of transformers'
/// `Gemma4ImageProcessor` output, without its padding.
pub fn gemma4_patches(img: &Rgb8, patch: usize, max_soft_tokens: usize, k: usize) -> Result<crate::towers::gemma4_vision::PatchInput, String> {
    let (th, tw) = gemma4_size(img.height, img.width, patch, max_soft_tokens * k * k, k)?;
    let r = if (img.width, img.height) == (tw, th) { img.clone() } else { resize(img, tw, th, Filter::Bicubic) };
    let (gw, gh) = (tw / patch, th / patch);
    let mut patches = Vec::with_capacity(gw * gh * patch * patch * 3);
    let mut positions = Vec::with_capacity(gw * gh);
    for py in 0..gh {
        for px in 0..gw {
            for y in py * patch..(py + 1) * patch {
                let row = &r.data[(y * tw + px * patch) * 3..(y * tw + (px + 1) * patch) * 3];
                // numpy: uint8 · (1/255) in f64, stored as f32.
                patches.extend(row.iter().map(|&v| (v as f64 * (1.0 / 255.0)) as f32));
            }
            positions.push([px, py]);
        }
    }
    Ok(crate::towers::gemma4_vision::PatchInput { patches, positions })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights of each output pixel sum to one in fixed point (within
    /// rounding), and an image of one colour stays that colour.
    #[test]
    fn resampling_keeps_flat_images_flat() {
        for (a, b) in [(50, 42), (20, 42), (97, 42), (7, 3), (3, 7)] {
            for (_, k) in coefficients(a, b, Filter::Bilinear).into_iter().chain(coefficients(a, b, Filter::Bicubic)) {
                let s: i64 = k.iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{a}→{b}: {s}");
            }
            let img = Rgb8 { width: a, height: b, data: vec![200; a * b * 3] };
            assert!(resize_bilinear(&img, b, a).data.iter().all(|&v| v == 200));
            assert!(resize(&img, b, a, Filter::Bicubic).data.iter().all(|&v| v == 200));
        }
    }
}
