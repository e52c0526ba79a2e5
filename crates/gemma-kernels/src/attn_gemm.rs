//! The two small f32 matrix products of blocked attention, register-tiled:
//! scores `S = Q·Kᵀ` (2 queries × 4 keys per tile) and the value update
//! `A += P·V` (2 queries × 32 columns per tile), so every loaded key or value
//! vector feeds several FMAs.

use crate::dot::{simd_level, SimdLevel};

/// Scalar reference of [`scores`].
pub fn scores_ref(q: &[f32], k: &[f32], d: usize, out: &mut [f32]) {
    let nk = k.len() / d;
    for (qi, o) in q.chunks_exact(d).zip(out.chunks_exact_mut(nk)) {
        for (kj, s) in k.chunks_exact(d).zip(o) {
            *s = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
        }
    }
}

/// `out[i, j] = q[i, :] · k[j, :]` with `q: [nq, d]`, `k: [nk, d]`, `out: [nq, nk]`.
pub fn scores(q: &[f32], k: &[f32], d: usize, out: &mut [f32]) {
    let (nq, nk) = (q.len() / d, k.len() / d);
    assert!(q.len() == nq * d && k.len() == nk * d && out.len() == nq * nk, "scores: shapes disagree");
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 && d.is_multiple_of(8) {
        // SAFETY: AVX2 and FMA detected at run time; shapes checked.
        return unsafe { avx2::scores(q, k, d, out) };
    }
    let _ = (simd_level, SimdLevel::Scalar);
    scores_ref(q, k, d, out)
}

/// Scalar reference of [`accumulate`].
pub fn accumulate_ref(p: &[f32], v: &[f32], d: usize, acc: &mut [f32]) {
    let nk = v.len() / d;
    for (pi, ai) in p.chunks_exact(nk.max(1)).zip(acc.chunks_exact_mut(d)) {
        for (&w, vj) in pi.iter().zip(v.chunks_exact(d)) {
            for (a, b) in ai.iter_mut().zip(vj) {
                *a += w * b;
            }
        }
    }
}

/// `acc[i, :] += Σ_j p[i, j] · v[j, :]` with `p: [nq, nk]`, `v: [nk, d]`, `acc: [nq, d]`.
pub fn accumulate(p: &[f32], v: &[f32], d: usize, acc: &mut [f32]) {
    let (nk, nq) = (v.len() / d, acc.len() / d);
    assert!(v.len() == nk * d && acc.len() == nq * d && p.len() == nq * nk, "accumulate: shapes disagree");
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 && d.is_multiple_of(32) {
        // SAFETY: AVX2 and FMA detected at run time; shapes checked.
        return unsafe { avx2::accumulate(p, v, d, acc) };
    }
    accumulate_ref(p, v, d, acc)
}

/// Round every value to the nearest f16 (kept as f32).
pub fn round_to_f16(x: &mut [f32]) {
    let mut body = 0;
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        body = x.len() / 8 * 8;
        // SAFETY: F16C detected at run time (part of the AVX2 level).
        unsafe { avx2::round_to_f16(&mut x[..body]) };
    }
    for v in &mut x[body..] {
        *v = half::f16::from_f32(*v).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // tiles index queries and keys together
mod avx2 {
    use std::arch::x86_64::*;

    /// Keys per cache block of [`scores`] and [`accumulate`] (128 keys of
    /// head dimension 256 are 128 KiB, within L2).
    const KEY_BLOCK: usize = 128;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_to_f16(x: &mut [f32]) {
        for c in x.chunks_exact_mut(8) {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(c.as_ptr()));
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// Scores of queries `i0..i0+QI` and keys `j0..j0+KJ`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn score_tile<const QI: usize, const KJ: usize>(q: *const f32, k: *const f32, d: usize, nk: usize, out: *mut f32) {
        let mut acc = [[_mm256_setzero_ps(); KJ]; QI];
        for c in (0..d).step_by(8) {
            let mut qv = [_mm256_setzero_ps(); QI];
            for i in 0..QI {
                qv[i] = _mm256_loadu_ps(q.add(i * d + c));
            }
            for j in 0..KJ {
                let kv = _mm256_loadu_ps(k.add(j * d + c));
                for i in 0..QI {
                    acc[i][j] = _mm256_fmadd_ps(qv[i], kv, acc[i][j]);
                }
            }
        }
        for i in 0..QI {
            for j in 0..KJ {
                *out.add(i * nk + j) = hsum(acc[i][j]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores(q: &[f32], k: &[f32], d: usize, out: &mut [f32]) {
        let (nq, nk) = (q.len() / d, k.len() / d);
        let (qp, kp, op) = (q.as_ptr(), k.as_ptr(), out.as_mut_ptr());
        // Blocks of keys small enough to stay in cache while every query
        // pair passes over them (long contexts hold megabytes of keys).
        for jb in (0..nk).step_by(KEY_BLOCK) {
            let je = (jb + KEY_BLOCK).min(nk);
            let mut i = 0;
            while i < nq {
                let two = nq - i >= 2;
                let mut j = jb;
                while j < je {
                    let four = je - j >= 4;
                    let (qa, ka, oa) = (qp.add(i * d), kp.add(j * d), op.add(i * nk + j));
                    match (two, four) {
                        (true, true) => score_tile::<2, 4>(qa, ka, d, nk, oa),
                        (true, false) => score_tile::<2, 1>(qa, ka, d, nk, oa),
                        (false, true) => score_tile::<1, 4>(qa, ka, d, nk, oa),
                        (false, false) => score_tile::<1, 1>(qa, ka, d, nk, oa),
                    }
                    j += if four { 4 } else { 1 };
                }
                i += if two { 2 } else { 1 };
            }
        }
    }

    /// Queries `QI` at `acc`, columns `c..c+32`, over `cnt` keys whose
    /// weights are at `p` (rows `stride` apart).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn acc_tile<const QI: usize>(p: *const f32, stride: usize, cnt: usize, v: *const f32, d: usize, acc: *mut f32) {
        let mut a = [[_mm256_setzero_ps(); 4]; QI];
        for i in 0..QI {
            for u in 0..4 {
                a[i][u] = _mm256_loadu_ps(acc.add(i * d + 8 * u));
            }
        }
        for j in 0..cnt {
            let mut vv = [_mm256_setzero_ps(); 4];
            for u in 0..4 {
                vv[u] = _mm256_loadu_ps(v.add(j * d + 8 * u));
            }
            for i in 0..QI {
                let w = _mm256_set1_ps(*p.add(i * stride + j));
                for u in 0..4 {
                    a[i][u] = _mm256_fmadd_ps(w, vv[u], a[i][u]);
                }
            }
        }
        for i in 0..QI {
            for u in 0..4 {
                _mm256_storeu_ps(acc.add(i * d + 8 * u), a[i][u]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn accumulate(p: &[f32], v: &[f32], d: usize, acc: &mut [f32]) {
        let (nk, nq) = (v.len() / d, acc.len() / d);
        let (pp, vp, ap) = (p.as_ptr(), v.as_ptr(), acc.as_mut_ptr());
        // Key blocks as in `scores`; every accumulator still adds its keys
        // in increasing order, so the blocking does not change the result.
        for jb in (0..nk).step_by(KEY_BLOCK) {
            let cnt = KEY_BLOCK.min(nk - jb);
            let mut i = 0;
            while i < nq {
                let two = nq - i >= 2;
                for c in (0..d).step_by(32) {
                    let (pa, va, aa) = (pp.add(i * nk + jb), vp.add(jb * d + c), ap.add(i * d + c));
                    if two {
                        acc_tile::<2>(pa, nk, cnt, va, d, aa);
                    } else {
                        acc_tile::<1>(pa, nk, cnt, va, d, aa);
                    }
                }
                i += if two { 2 } else { 1 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + salt * 31) % 1009) as f32 / 504.5 - 1.0).collect()
    }

    #[test]
    fn f16_rounding_matches_half() {
        let mut x: Vec<f32> = data(1003, 9).iter().map(|v| v * 3e4).chain([1e-8, 7e4, -1e9, 0.0]).collect();
        let want: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        round_to_f16(&mut x);
        assert_eq!(x, want);
    }

    #[test]
    fn tiled_products_match_the_references() {
        // Including more keys than one cache block (300 > 128), with a partial last block.
        for (nq, nk, d) in [(1, 1, 32), (3, 5, 64), (16, 16, 256), (5, 7, 8), (2, 3, 40), (5, 300, 64)] {
            let (q, k) = (data(nq * d, 1), data(nk * d, 2));
            let (mut s, mut r) = (vec![0f32; nq * nk], vec![0f32; nq * nk]);
            scores(&q, &k, d, &mut s);
            scores_ref(&q, &k, d, &mut r);
            for (a, b) in s.iter().zip(&r) {
                assert!((a - b).abs() < 1e-4, "scores {nq}x{nk}x{d}: {a} vs {b}");
            }
            let (p, v) = (data(nq * nk, 3), data(nk * d, 4));
            let (mut a1, mut a2) = (data(nq * d, 5), data(nq * d, 5));
            accumulate(&p, &v, d, &mut a1);
            accumulate_ref(&p, &v, d, &mut a2);
            for (x, y) in a1.iter().zip(&a2) {
                assert!((x - y).abs() < 1e-4, "accumulate {nq}x{nk}x{d}: {x} vs {y}");
            }
        }
    }
}
