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

/// `x[i] = e^(x[i] − shift)` in place; returns the sum (softmax numerators).
pub fn exp_shifted(x: &mut [f32], shift: f32) -> f32 {
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
        sum += *v;
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
    pub unsafe fn exp_shifted(x: &mut [f32], shift: f32) -> f32 {
        let s = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        for c in x.chunks_exact_mut(8) {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s));
            acc = _mm256_add_ps(acc, e);
            _mm256_storeu_ps(c.as_mut_ptr(), e);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes.iter().sum()
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
    fn exp_shifted_matches_std() {
        let mut x: Vec<f32> = (0..1001).map(|i| -(i as f32) / 10.0).collect();
        let want: Vec<f32> = x.iter().map(|v| (v - 0.5).exp()).collect();
        let sum = exp_shifted(&mut x, 0.5);
        for (g, w) in x.iter().zip(&want) {
            assert!((g - w).abs() <= 3e-7 * w.abs() + 1.7e-38, "{g} vs {w}");
        }
        assert!((sum - want.iter().sum::<f32>()).abs() < 1e-5);
        let mut inf = [f32::NEG_INFINITY; 9];
        assert_eq!(exp_shifted(&mut inf, 0.0), 0.0);
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
