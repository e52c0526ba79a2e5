//! Fused GeGLU step of the feed-forward: `gate = gelu_tanh(gate) · up` in
//! one pass, with a SIMD exponential on AVX2.
//!
//! `gelu_tanh(x) = ½x(1 + tanh u) = x / (1 + e^(−2u))`, `u = √(2/π)(x + 0.044715x³)`;
//! the second form needs one exponential and has no cancellation.

use crate::dot::{simd_level, SimdLevel};
use crate::ops::gelu_tanh;

/// Scalar reference: `gate[i] = gelu_tanh(gate[i]) * up[i]`.
pub fn geglu_ref(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]` (SIMD where available).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: gate and up lengths differ");
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        let body = gate.len() / 8 * 8;
        // SAFETY: AVX2 and FMA detected at run time; lengths checked.
        unsafe { avx2::geglu(&mut gate[..body], &up[..body]) };
        geglu_ref(&mut gate[body..], &up[body..]);
        return;
    }
    let _ = (simd_level, SimdLevel::Scalar);
    geglu_ref(gate, up)
}

/// `x[i] = gelu_tanh(x[i])` (SIMD where available: [`geglu`] with an `up` of ones, exact).
pub fn gelu(x: &mut [f32]) {
    const ONES: [f32; 512] = [1.0; 512];
    for c in x.chunks_mut(ONES.len()) {
        let n = c.len();
        geglu(c, &ONES[..n]);
    }
}

/// ggml's tanh-GELU of one f32, as it fills its table: `(½x)·(tanh((√(2/π)·x)·(0.044715·x·x + 1)) + 1)`
/// with the inner `a·x·x + 1` fused.
fn gelu_ggml(x: f32) -> f32 {
    const S: f32 = 0.797_884_6; // √(2/π), the same f32 as ggml's constant
    (0.5 * x) * (((S * x) * (0.044715 * x).mul_add(x, 1.0)).tanh() + 1.0)
}

/// llama.cpp's GELU table: the GELU of every f16 value, rounded to f16
/// (kept as f32), indexed by the f16 bits. 256 KiB, built on first use.
fn gelu_f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| half::f16::from_f32(gelu_ggml(half::f16::from_bits(b).to_f32())).to_f32()).collect())
}

/// GELU as llama.cpp's CPU backend computes it: 0 at or below −10, `x` at
/// or above 10, else the table entry of `x` rounded to f16.
#[inline]
fn gelu_table_lookup(table: &[f32], x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[half::f16::from_f32(x).to_bits() as usize]
    }
}

/// Scalar reference of [`geglu_f16_table`].
pub fn geglu_f16_table_ref(gate: &mut [f32], up: &[f32]) {
    let table = gelu_f16_table();
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_table_lookup(table, *g) * u;
    }
}

/// `gate[i] = gelu(gate[i]) * up[i]` with llama.cpp's f16 GELU table (the
/// GeGLU of [`crate`] users that reproduce llama.cpp's numerics).
pub fn geglu_f16_table(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: gate and up lengths differ");
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        let body = gate.len() / 8 * 8;
        // SAFETY: AVX2, FMA and F16C detected at run time; lengths checked;
        // the table has an entry for every 16-bit index.
        unsafe { avx2::geglu_f16_table(&mut gate[..body], &up[..body], gelu_f16_table()) };
        geglu_f16_table_ref(&mut gate[body..], &up[body..]);
        return;
    }
    geglu_f16_table_ref(gate, up)
}

/// Scalar reference of [`geglu_backward`], in f32 as the training step
/// runs it: with `s = σ(2u)` (so `gelu = x·s`), `gelu' = s + 2x·s(1−s)·u'`.
pub fn geglu_backward_ref(gate: &[f32], up: &[f32], dact: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    const K: f32 = 0.797_884_6;
    const C: f32 = 0.044715;
    for i in 0..gate.len() {
        let x = gate[i];
        let u = K * (x + C * x * x * x);
        let s = 1.0 / (1.0 + (-2.0 * u).exp());
        let du = K * (1.0 + 3.0 * C * x * x);
        dgate[i] = dact[i] * up[i] * (s + 2.0 * x * s * (1.0 - s) * du);
        dup[i] = dact[i] * x * s;
    }
}

/// Gradients of `act = gelu_tanh(gate) · up`: `dgate = dact · up · gelu'(gate)`,
/// `dup = dact · gelu(gate)` (SIMD where available; one thread).
pub fn geglu_backward(gate: &[f32], up: &[f32], dact: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    let n = gate.len();
    assert!(up.len() == n && dact.len() == n && dgate.len() == n && dup.len() == n, "geglu_backward: lengths differ");
    let mut body = 0;
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        body = n / 8 * 8;
        // SAFETY: AVX2 and FMA detected at run time; lengths checked.
        unsafe { avx2::geglu_backward(&gate[..body], &up[..body], &dact[..body], &mut dgate[..body], &mut dup[..body]) };
    }
    geglu_backward_ref(&gate[body..], &up[body..], &dact[body..], &mut dgate[body..], &mut dup[body..]);
}

/// `x[i] = e^(x[i] − shift)` in place; returns the sum (softmax numerators),
/// accumulated in f64.
pub fn exp_shifted(x: &mut [f32], shift: f32) -> f64 {
    let mut sum = 0.0;
    let mut body = 0;
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        body = x.len() / 8 * 8;
        // SAFETY: AVX2 and FMA detected at run time.
        sum = unsafe { avx2::exp_shifted(&mut x[..body], shift) };
    }
    for v in &mut x[body..] {
        *v = (*v - shift).exp();
        sum += *v as f64;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `e^x` for 8 lanes (Cephes-style: 2^n · e^r, |r| ≤ ln2/2, degree-6
    /// polynomial; ~2 ulp; 0 below −87 (no subnormals), 2^127 above 88).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp(x: __m256) -> __m256 {
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.0));
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
        let n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        // r = x − n·ln2, with ln2 split in two for precision.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // × 2^n through the exponent bits.
        let pow = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        _mm256_andnot_ps(tiny, _mm256_mul_ps(e, _mm256_castsi256_ps(pow)))
    }

    /// `e^(x − shift)` over a multiple of 8 values; returns the sum.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shifted(x: &mut [f32], shift: f32) -> f64 {
        let s = _mm256_set1_ps(shift);
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for c in x.chunks_exact_mut(8) {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s));
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
        }
        let mut lanes = [0f64; 4];
        _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo, hi));
        lanes.iter().sum()
    }

    /// [`super::geglu_f16_table`] over a multiple of 8 values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn geglu_f16_table(gate: &mut [f32], up: &[f32], table: &[f32]) {
        debug_assert_eq!(table.len(), 1 << 16);
        let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
        for (g, u) in gate.chunks_exact_mut(8).zip(up.chunks_exact(8)) {
            let x = _mm256_loadu_ps(g.as_ptr());
            let bits = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
            let t = _mm256_i32gather_ps::<4>(table.as_ptr(), bits);
            // x ≥ 10 → x; x ≤ −10 → 0.
            let y = _mm256_blendv_ps(t, x, _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi));
            let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, lo), y);
            _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(y, _mm256_loadu_ps(u.as_ptr())));
        }
    }

    /// [`super::geglu_backward`] over a multiple of 8 values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn geglu_backward(gate: &[f32], up: &[f32], dact: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
        let (k, c3, c) = (_mm256_set1_ps(0.797_884_6), _mm256_set1_ps(3.0 * 0.044715), _mm256_set1_ps(0.044715));
        let (one, m2, two) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-2.0), _mm256_set1_ps(2.0));
        for i in (0..gate.len()).step_by(8) {
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let x2 = _mm256_mul_ps(x, x);
            let u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, x2), x, x));
            let s = _mm256_div_ps(one, _mm256_add_ps(one, exp(_mm256_mul_ps(m2, u))));
            let du = _mm256_mul_ps(k, _mm256_fmadd_ps(c3, x2, one));
            // s + 2x·s(1−s)·du
            let g = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(two, x), _mm256_mul_ps(s, _mm256_sub_ps(one, s))), du, s);
            let d = _mm256_loadu_ps(dact.as_ptr().add(i));
            _mm256_storeu_ps(dgate.as_mut_ptr().add(i), _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(up.as_ptr().add(i))), g));
            _mm256_storeu_ps(dup.as_mut_ptr().add(i), _mm256_mul_ps(d, _mm256_mul_ps(x, s)));
        }
    }

    /// Fused GeGLU over a multiple of 8 values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn geglu(gate: &mut [f32], up: &[f32]) {
        let c = _mm256_set1_ps(-2.0 * 0.797_884_6);
        let k = _mm256_set1_ps(0.044715);
        let one = _mm256_set1_ps(1.0);
        for (g, u) in gate.chunks_exact_mut(8).zip(up.chunks_exact(8)) {
            let x = _mm256_loadu_ps(g.as_ptr());
            let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
            let inner = _mm256_mul_ps(c, _mm256_fmadd_ps(k, x3, x));
            let y = _mm256_div_ps(x, _mm256_add_ps(one, exp(inner)));
            _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(y, _mm256_loadu_ps(u.as_ptr())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geglu_backward_simd_equals_reference_and_the_exact_gradient() {
        let n = 1003;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 - 500.0) / 50.0).collect();
        let up: Vec<f32> = (0..n).map(|i| 1.0 - (i % 7) as f32 / 3.0).collect();
        let da: Vec<f32> = (0..n).map(|i| ((i * 31) % 11) as f32 / 5.0 - 1.0).collect();
        let (mut g1, mut u1, mut g2, mut u2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        geglu_backward(&x, &up, &da, &mut g1, &mut u1);
        geglu_backward_ref(&x, &up, &da, &mut g2, &mut u2);
        for i in 0..n {
            // exact (f64) tanh form
            let xd = x[i] as f64;
            let t = (0.797_884_560_802_865_4 * (xd + 0.044715 * xd * xd * xd)).tanh();
            let gelu = 0.5 * xd * (1.0 + t);
            let grad = 0.5 * (1.0 + t) + 0.5 * xd * (1.0 - t * t) * 0.797_884_560_802_865_4 * (1.0 + 3.0 * 0.044715 * xd * xd);
            let (wg, wu) = (da[i] as f64 * up[i] as f64 * grad, da[i] as f64 * gelu);
            for (got, want) in [(g1[i], wg), (g2[i], wg), (u1[i], wu), (u2[i], wu)] {
                assert!((got as f64 - want).abs() <= 2e-6 * (1.0 + want.abs()), "x={} {got} vs {want}", x[i]);
            }
        }
    }

    #[test]
    fn exp_shifted_matches_std() {
        let mut x: Vec<f32> = (0..1001).map(|i| -(i as f32) / 10.0).collect();
        let want: Vec<f32> = x.iter().map(|v| (v - 0.5).exp()).collect();
        let sum = exp_shifted(&mut x, 0.5);
        for (g, w) in x.iter().zip(&want) {
            assert!((g - w).abs() <= 3e-7 * w.abs() + 1.7e-38, "{g} vs {w}");
        }
        assert!((sum - want.iter().map(|&w| w as f64).sum::<f64>()).abs() < 1e-5);
        let mut inf = [f32::NEG_INFINITY; 9];
        assert_eq!(exp_shifted(&mut inf, 0.0), 0.0);
    }

    #[test]
    fn f16_table_geglu_simd_equals_reference_and_is_close_to_exact() {
        let x: Vec<f32> =
            (0..5003).map(|i| (i as f32 - 2500.0) / 200.0).chain([f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 9.999, 10.0, -10.0]).collect();
        let up: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 5) as f32 / 5.0).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        geglu_f16_table(&mut a, &up);
        geglu_f16_table_ref(&mut b, &up);
        assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        for ((&g, &x), &u) in a.iter().zip(&x).zip(&up) {
            if x.is_finite() {
                // f16 input and output: ~2^-10 relative, plus the cut-offs at ±10.
                let want = gelu_tanh(x) * u;
                assert!((g - want).abs() <= 2e-3 * want.abs() + 2e-3, "x={x}: {g} vs {want}");
            }
        }
        assert_eq!(a[5003], f32::INFINITY);
        assert_eq!(a[5004], 0.0);
    }

    #[test]
    fn simd_geglu_matches_the_reference() {
        let x: Vec<f32> = (0..4003).map(|i| (i as f32 - 2000.0) / 80.0).collect();
        let up: Vec<f32> = (0..4003).map(|i| 1.0 + (i % 7) as f32 / 7.0).collect();
        let (mut a, mut b) = (x.clone(), x.clone());
        geglu(&mut a, &up);
        geglu_ref(&mut b, &up);
        for (i, (g, w)) in a.iter().zip(&b).enumerate() {
            // The reference's 1 + tanh cancels for x < −5 (it gives −0 where
            // the exact value is ~−1e−8): compare absolutely there.
            assert!((g - w).abs() <= 2e-6 * w.abs() + 1e-6, "x={}: {g} vs {w}", x[i]);
        }
        let mut big = [1e30f32, -1e30, 0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30];
        geglu(&mut big, &[1.0; 8]);
        assert_eq!(big[0], 1e30);
        assert!(big[1].abs() < 1e-6 && big[2] == 0.0 && big[3] == 0.0);
        assert!(big.iter().all(|v| v.is_finite()));
    }
}
