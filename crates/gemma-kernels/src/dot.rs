//! Dot products of an f32 activation vector with a weight row of any stored
//! dtype. `dot_*` dispatch at run time; `*_ref` are the scalar references.

use half::{bf16, f16};
use std::sync::OnceLock;

/// Which SIMD level this CPU offers (detected once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// No usable SIMD: scalar code.
    Scalar,
    /// x86-64 AVX2 + FMA (+F16C).
    Avx2,
}

/// The SIMD level used by the dispatched kernels.
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("GEMMA_FORCE_SCALAR").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Scalar
    })
}

/// Scalar reference: `sum(a[i] * b[i])`.
pub fn dot_f32_ref(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scalar reference for a bf16 weight row.
pub fn dot_bf16_ref(a: &[f32], w: &[bf16]) -> f32 {
    a.iter().zip(w).map(|(x, y)| x * y.to_f32()).sum()
}

/// Scalar reference for an f16 weight row.
pub fn dot_f16_ref(a: &[f32], w: &[f16]) -> f32 {
    a.iter().zip(w).map(|(x, y)| x * y.to_f32()).sum()
}

/// `a · b` for f32 vectors of equal length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2::dot_f32(a, b) };
    }
    dot_f32_ref(a, b)
}

/// `a · w` for a bf16 weight row.
pub fn dot_bf16(a: &[f32], w: &[bf16]) -> f32 {
    debug_assert_eq!(a.len(), w.len());
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2::dot_bf16(a, w) };
    }
    dot_bf16_ref(a, w)
}

/// `[a₀·w, a₁·w, a₂·w, a₃·w]`: four tokens against one bf16 weight row,
/// the row converted once; each result bit-identical to [`dot_bf16`] of
/// that token alone (the same accumulators in the same order), so decode
/// rows stay batch-invariant.
pub fn dot_bf16_x4(a: [&[f32]; 4], w: &[bf16]) -> [f32; 4] {
    debug_assert!(a.iter().all(|x| x.len() == w.len()));
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2::dot_bf16_x4(a, w) };
    }
    a.map(|x| dot_bf16_ref(x, w))
}

/// `a · w` for an f16 weight row.
pub fn dot_f16(a: &[f32], w: &[f16]) -> f32 {
    debug_assert_eq!(a.len(), w.len());
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { avx2::dot_f16(a, w) };
    }
    dot_f16_ref(a, w)
}

/// `y += a * x` for an f16 vector `x`.
pub fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { avx2::axpy_f16(a, x, y) };
    }
    y.iter_mut().zip(x).for_each(|(o, v)| *o += a * v.to_f32());
}

/// `y += a * x` for f32 vectors with fused multiply-adds (SIMD when the CPU
/// has AVX2 + FMA; the scalar path uses `mul_add`, so both round once).
pub fn axpy_f32_fma(a: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2::axpy_f32(a, x, y) };
    }
    y.iter_mut().zip(x).for_each(|(o, v)| *o = a.mul_add(*v, *o));
}

/// `y += a * x` for f32 vectors.
pub fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(o, v)| *o += a * v);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
            i += 16;
        }
        while i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_bf16(p: *const bf16) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(a: &[f32], w: &[bf16]) -> f32 {
        let n = a.len().min(w.len());
        let (pa, pw) = (a.as_ptr(), w.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), load_bf16(pw.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), load_bf16(pw.add(i + 8)), acc1);
            i += 16;
        }
        while i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), load_bf16(pw.add(i)), acc0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += *pa.add(i) * (*pw.add(i)).to_f32();
            i += 1;
        }
        s
    }

    /// Four tokens' [`dot_bf16`], each with its own two accumulators
    /// updated exactly as the single-token loop updates them.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16_x4(a: [&[f32]; 4], w: &[bf16]) -> [f32; 4] {
        let n = w.len();
        let pw = w.as_ptr();
        let pa = a.map(|x| x.as_ptr());
        let mut acc0 = [_mm256_setzero_ps(); 4];
        let mut acc1 = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 16 <= n {
            let (w0, w1) = (load_bf16(pw.add(i)), load_bf16(pw.add(i + 8)));
            for t in 0..4 {
                acc0[t] = _mm256_fmadd_ps(_mm256_loadu_ps(pa[t].add(i)), w0, acc0[t]);
                acc1[t] = _mm256_fmadd_ps(_mm256_loadu_ps(pa[t].add(i + 8)), w1, acc1[t]);
            }
            i += 16;
        }
        if i + 8 <= n {
            let w0 = load_bf16(pw.add(i));
            for t in 0..4 {
                acc0[t] = _mm256_fmadd_ps(_mm256_loadu_ps(pa[t].add(i)), w0, acc0[t]);
            }
            i += 8;
        }
        let mut out = [0f32; 4];
        for t in 0..4 {
            let mut s = hsum(_mm256_add_ps(acc0[t], acc1[t]));
            for j in i..n {
                s += *pa[t].add(j) * (*pw.add(j)).to_f32();
            }
            out[t] = s;
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm_loadu_si128(px.add(i) as *const __m128i);
            let r = _mm256_fmadd_ps(va, _mm256_cvtph_ps(h), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), r);
            i += 8;
        }
        while i < n {
            *py.add(i) += a * (*px.add(i)).to_f32();
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))));
            i += 8;
        }
        while i < n {
            *py.add(i) = a.mul_add(*px.add(i), *py.add(i));
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f32], w: &[f16]) -> f32 {
        let n = a.len().min(w.len());
        let (pa, pw) = (a.as_ptr(), w.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm_loadu_si128(pw.add(i) as *const __m128i);
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_cvtph_ps(h), acc0);
            i += 8;
        }
        let mut s = hsum(acc0);
        while i < n {
            s += *pa.add(i) * (*pw.add(i)).to_f32();
            i += 1;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: f32, b: f32, n: usize) {
        let tol = 1e-5 * (n as f32).sqrt().max(1.0);
        assert!((a - b).abs() <= tol, "{a} vs {b} (n={n})");
    }

    /// Four tokens at once equal each alone, bit for bit.
    #[test]
    fn bf16_x4_equals_single_token_dots() {
        for n in [0, 1, 7, 8, 15, 16, 17, 24, 33, 64, 255, 640, 1000] {
            let xs: Vec<Vec<f32>> = (0..4).map(|t| data(n, 10 + t)).collect();
            let w: Vec<bf16> = data(n, 3).iter().map(|&x| bf16::from_f32(x)).collect();
            let got = dot_bf16_x4([&xs[0], &xs[1], &xs[2], &xs[3]], &w);
            for t in 0..4 {
                assert_eq!(got[t].to_bits(), dot_bf16(&xs[t], &w).to_bits(), "n={n} token {t}");
            }
        }
    }

    #[test]
    fn fast_paths_match_reference_for_all_lengths() {
        for n in [0, 1, 7, 8, 15, 16, 17, 33, 64, 255, 1000] {
            let a = data(n, 1);
            let b = data(n, 2);
            close(dot_f32(&a, &b), dot_f32_ref(&a, &b), n);
            let wb: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
            close(dot_bf16(&a, &wb), dot_bf16_ref(&a, &wb), n);
            let wh: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
            close(dot_f16(&a, &wh), dot_f16_ref(&a, &wh), n);
            let mut y1 = a.clone();
            let mut y2 = a.clone();
            axpy_f16(0.75, &wh, &mut y1);
            y2.iter_mut().zip(&wh).for_each(|(o, v)| *o += 0.75 * v.to_f32());
            for (p, q) in y1.iter().zip(&y2) {
                close(*p, *q, 1);
            }
        }
    }
}
