//! Image preprocessing as transformers' Gemma 3 image processor does it:
//! a square bilinear resize with PIL's antialiased resampling (separable,
//! horizontal pass first, 8-bit intermediate, 22-bit fixed-point weights),
//! then rescale and normalize (mean 0.5, std 0.5) into `[3, S, S]` floats.

use gemma_formats::image_file::Rgb8;

/// Fixed-point bits of the resampling weights (PIL: 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

/// PIL's bilinear (triangle) filter, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// For each output index: the first input index, and the fixed-point
/// weights of the inputs from there (PIL's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle's support (1) × filterscale
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero; then clamped to the image.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| triangle((x as f64 - center + 0.5) * ss)).collect();
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

/// Resize to `out_w × out_h` with PIL's `Image.resize(…, BILINEAR)`.
pub fn resize_bilinear(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let half = 1i64 << (PRECISION_BITS - 1);
    let vert = coefficients(h, out_h);
    // Rows the vertical pass reads.
    let (y0, y1) = if h == out_h { (0, h) } else { (vert[0].0, vert.iter().map(|(s, k)| s + k.len()).max().unwrap_or(h)) };
    let tmp = if w == out_w {
        img.data[y0 * w * 3..y1 * w * 3].to_vec()
    } else {
        let horiz = coefficients(w, out_w);
        let mut t = vec![0u8; (y1 - y0) * out_w * 3];
        for y in y0..y1 {
            let row = &img.data[y * w * 3..(y + 1) * w * 3];
            for (xx, (xmin, k)) in horiz.iter().enumerate() {
                for c in 0..3 {
                    let acc = k.iter().enumerate().fold(half, |a, (i, &kk)| a + row[(xmin + i) * 3 + c] as i64 * kk as i64);
                    t[((y - y0) * out_w + xx) * 3 + c] = clip8(acc);
                }
            }
        }
        t
    };
    if h == out_h {
        return Rgb8 { width: out_w, height: out_h, data: tmp };
    }
    let mut out = vec![0u8; out_h * out_w * 3];
    for (yy, (ymin, k)) in vert.iter().enumerate() {
        for x in 0..out_w * 3 {
            let acc = k.iter().enumerate().fold(half, |a, (i, &kk)| a + tmp[(ymin - y0 + i) * out_w * 3 + x] as i64 * kk as i64);
            out[yy * out_w * 3 + x] = clip8(acc);
        }
    }
    Rgb8 { width: out_w, height: out_h, data: out }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights of each output pixel sum to one in fixed point (within
    /// rounding), and an image of one colour stays that colour.
    #[test]
    fn resampling_keeps_flat_images_flat() {
        for (a, b) in [(50, 42), (20, 42), (97, 42), (7, 3), (3, 7)] {
            for (_, k) in coefficients(a, b) {
                let s: i64 = k.iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{a}→{b}: {s}");
            }
            let img = Rgb8 { width: a, height: b, data: vec![200; a * b * 3] };
            assert!(resize_bilinear(&img, b, a).data.iter().all(|&v| v == 200));
        }
    }
}
