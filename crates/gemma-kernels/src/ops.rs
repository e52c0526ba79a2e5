//! Element-wise and per-row ops of the Gemma forward, in f32.

/// RMSNorm of each row of `x` (`[n, dim]`) into `out`:
/// `out = x / sqrt(mean(x²) + eps) * gain`, where the loader has already
/// turned the checkpoint weight `w` into `gain = 1 + w` (f32).
pub fn rms_norm(x: &[f32], gain: &[f32], eps: f32, out: &mut [f32]) {
    let dim = gain.len();
    assert_eq!(x.len(), out.len(), "rms_norm input and output lengths differ");
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ms = mean_square(xr);
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(gain) {
            *o = v * inv * g;
        }
    }
}

/// Mean of the squares of `x`, accumulated in f64 as ggml does (the
/// squares are f32 products), rounded to f32.
#[inline]
fn mean_square(x: &[f32]) -> f32 {
    (x.iter().map(|v| (v * v) as f64).sum::<f64>() / x.len() as f64) as f32
}

/// In-place RMSNorm of each row of `x` (`[n, dim]`).
pub fn rms_norm_in_place(x: &mut [f32], gain: &[f32], eps: f32) {
    let dim = gain.len();
    for xr in x.chunks_exact_mut(dim) {
        let ms = mean_square(xr);
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, &g) in xr.iter_mut().zip(gain) {
            *v = *v * inv * g;
        }
    }
}

/// Tanh-approximated GELU (PyTorch's `gelu(approximate="tanh")`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// Soft-capping: `cap * tanh(x / cap)` on every element.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

/// In-place numerically stable softmax. `-inf` entries get probability 0.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `a += b`.
pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Rotary embedding ("rotate half" layout) of one head vector at `pos`.
/// `inv_freq` has `head.len() / 2` entries.
pub fn rope(head: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let half = inv_freq.len();
    let p = pos as f32;
    for (i, &f) in inv_freq.iter().enumerate() {
        let angle = p * f;
        let (sin, cos) = angle.sin_cos();
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = b * cos + a * sin;
    }
}

/// The `(cos, sin)` of each RoPE angle at `pos`, `[inv_freq.len()]` each,
/// shared by every head of a token.
pub fn rope_angles(pos: usize, inv_freq: &[f32], cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
    cos.clear();
    sin.clear();
    let p = pos as f32;
    for &f in inv_freq {
        let (s, c) = (p * f).sin_cos();
        cos.push(c);
        sin.push(s);
    }
}

/// The cos/sin of RoPE at `pos` as ggml computes them: the angle of pair
/// `i` is `pos · step^i` accumulated by repeated f32 multiplication
/// (`step = base^(−2/dim)`), times `freq_scale` (1/linear factor).
/// Differs from [`rope_angles`] in the last bits only.
pub fn rope_angles_ggml(pos: usize, step: f32, freq_scale: f32, pairs: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
    cos.clear();
    sin.clear();
    let mut theta = pos as f32;
    for _ in 0..pairs {
        let (s, c) = (freq_scale * theta).sin_cos();
        cos.push(c);
        sin.push(s);
        theta *= step;
    }
}

/// ggml's RoPE step `base^(−2/dim)` in f32.
pub fn rope_step_ggml(dim: usize, base: f64) -> f32 {
    (base as f32).powf(-2.0 / dim as f32)
}

/// RoPE with precomputed angles ([`rope_angles`]); equals [`rope`].
pub fn rope_with(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (lo, hi) = head.split_at_mut(half);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (x, y) = (*a, *b);
        *a = x * c - y * s;
        *b = y * c + x * s;
    }
}

/// RoPE inverse frequencies `1 / (theta^(2i/dim)) / scale` for `dim / 2` pairs.
pub fn rope_inv_freq(dim: usize, theta: f64, linear_scale: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            ((1.0 / theta.powf(exponent as f64)) / linear_scale) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_rope_angles_are_close_to_the_direct_ones() {
        let f = rope_inv_freq(256, 1e6, 8.0);
        let (mut c, mut s, mut c2, mut s2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for pos in [0, 1, 37, 4000] {
            rope_angles(pos, &f, &mut c, &mut s);
            rope_angles_ggml(pos, rope_step_ggml(256, 1e6), 1.0 / 8.0, 128, &mut c2, &mut s2);
            for (a, b) in c.iter().zip(&c2).chain(s.iter().zip(&s2)) {
                assert!((a - b).abs() < 2e-3, "pos {pos}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn rope_with_tables_equals_rope() {
        let f = rope_inv_freq(8, 10000.0, 1.0);
        let (mut c, mut s) = (Vec::new(), Vec::new());
        rope_angles(37, &f, &mut c, &mut s);
        let mut a: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let mut b = a.clone();
        rope(&mut a, 37, &f);
        rope_with(&mut b, &c, &s);
        assert_eq!(a, b);
    }

    #[test]
    fn rms_norm_of_constant_row_is_gain() {
        let x = [2.0f32; 4];
        let mut out = [0.0; 4];
        rms_norm(&x, &[1.0, 2.0, 3.0, 4.0], 0.0, &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn softmax_sums_to_one_and_masks() {
        let mut x = [1.0, f32::NEG_INFINITY, 3.0];
        softmax(&mut x);
        assert_eq!(x[1], 0.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gelu_known_values() {
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841192).abs() < 1e-5);
        assert!((gelu_tanh(-3.0) - -0.003637).abs() < 1e-5);
    }

    #[test]
    fn rope_at_zero_is_identity_and_preserves_norm() {
        let f = rope_inv_freq(4, 10000.0, 1.0);
        let mut h = [1.0, 2.0, 3.0, 4.0];
        rope(&mut h, 0, &f);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0]);
        rope(&mut h, 17, &f);
        let n: f32 = h.iter().map(|v| v * v).sum();
        assert!((n - 30.0).abs() < 1e-4);
    }
}
