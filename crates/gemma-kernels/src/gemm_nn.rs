//! `C = A·B` for row-major f32 matrices, `A: [m, k]`, `B: [k, n]`, with a
//! register-tiled broadcast kernel: each step broadcasts one value of 6 rows
//! of `A` and multiplies it with 16 consecutive values of a row of `B` into
//! 12 accumulators (no horizontal sums, 12 independent FMA chains). The
//! float GEMM of prefill and training (`matmul`'s f32/bf16/f16 path, with
//! `B` a transposed block of weight rows) and the vision tower's attention
//! run on it.
//!
//! Every output is `Σ_p a[i, p]·b[p, j]` accumulated in increasing `p` with
//! fused multiply-adds, whatever the shapes and the tiling: the result is
//! bit-identical to [`gemm_nn_ref`] and does not depend on `m` (a row's
//! output is the same alone or among others).

use crate::dot::{simd_level, SimdLevel};

/// Scalar reference of [`gemm_nn`] (fused multiply-adds in increasing `p`).
pub fn gemm_nn_ref(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, c: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for p in 0..k {
                s = a[i * k + p].mul_add(b[p * n + j], s);
            }
            c[i * n + j] = s;
        }
    }
}

/// `c = a·b` with `a: [m, k]`, `b: [k, n]`, `c: [m, n]` (overwritten).
pub fn gemm_nn(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, c: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm_nn: shapes disagree");
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: AVX2 and FMA detected at run time; shapes checked above.
        return unsafe { avx2::gemm_nn(a, m, k, b, n, c) };
    }
    let _ = (simd_level, SimdLevel::Scalar);
    gemm_nn_ref(a, m, k, b, n, c)
}

/// [`gemm_nn`] on all threads, rows of `a` split in even groups (the
/// result is the same bit for bit: each output's sum does not depend on
/// the rows around it).
pub fn gemm_nn_parallel(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, c: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "gemm_nn: shapes disagree");
    if n == 0 {
        return;
    }
    let rows = m.div_ceil(crate::pool::global().threads()).max(1);
    crate::pool::parallel_chunks(c, rows * n, &|r, c| {
        let (i0, rows) = (r.start / n, c.len() / n);
        gemm_nn(&a[i0 * k..(i0 + rows) * k], rows, k, b, n, c);
    });
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // tiles index rows and vectors together
mod avx2 {
    use std::arch::x86_64::*;

    /// Rows of `A` per tile.
    const MR: usize = 6;
    /// Steps of `p` per pass, so a tile's slice of `B` (`KB × 16` values) stays in L1/L2.
    const KB: usize = 256;

    /// Rows `R` × `8·V` columns of `C` at `c` over `kl` steps (`B` and `C`
    /// both have `ld` columns); `first`: the accumulators start at zero,
    /// else at `C`'s values (a later `KB` pass).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const V: usize>(a: *const f32, lda: usize, b: *const f32, c: *mut f32, ld: usize, kl: usize, first: bool) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if !first {
            for r in 0..R {
                for u in 0..V {
                    acc[r][u] = _mm256_loadu_ps(c.add(r * ld + 8 * u));
                }
            }
        }
        // One pointer per row of A (indexed by p) and one walking B: no
        // address arithmetic beside the FMAs in the loop.
        let rows: [*const f32; R] = std::array::from_fn(|r| a.add(r * lda));
        let mut bp = b;
        for p in 0..kl {
            let mut bv = [_mm256_setzero_ps(); V];
            for u in 0..V {
                bv[u] = _mm256_loadu_ps(bp.add(8 * u));
            }
            for r in 0..R {
                let av = _mm256_broadcast_ss(&*rows[r].add(p));
                for u in 0..V {
                    acc[r][u] = _mm256_fmadd_ps(av, bv[u], acc[r][u]);
                }
            }
            bp = bp.add(ld);
        }
        for r in 0..R {
            for u in 0..V {
                _mm256_storeu_ps(c.add(r * ld + 8 * u), acc[r][u]);
            }
        }
    }

    /// All row tiles of one column block of width `8·V` (`A: [m, k]`, `B`/`C` `n` wide).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn column_block<const V: usize>(a: *const f32, b: *const f32, c: *mut f32, (m, k, n): (usize, usize, usize), kl: usize, first: bool) {
        let mut i = 0;
        while i < m {
            let (ai, ci) = (a.add(i * k), c.add(i * n));
            match m - i {
                1 => tile::<1, V>(ai, k, b, ci, n, kl, first),
                2 => tile::<2, V>(ai, k, b, ci, n, kl, first),
                3 => tile::<3, V>(ai, k, b, ci, n, kl, first),
                4 => tile::<4, V>(ai, k, b, ci, n, kl, first),
                5 => tile::<5, V>(ai, k, b, ci, n, kl, first),
                _ => tile::<MR, V>(ai, k, b, ci, n, kl, first),
            }
            i += MR;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm_nn(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, c: &mut [f32]) {
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        if k == 0 {
            c.fill(0.0);
            return;
        }
        for kb in (0..k).step_by(KB) {
            let kl = KB.min(k - kb);
            let first = kb == 0;
            let (a0, b0) = (ap.add(kb), bp.add(kb * n));
            let mut j = 0;
            while j + 16 <= n {
                column_block::<2>(a0, b0.add(j), cp.add(j), (m, k, n), kl, first);
                j += 16;
            }
            if j + 8 <= n {
                column_block::<1>(a0, b0.add(j), cp.add(j), (m, k, n), kl, first);
                j += 8;
            }
            // The last columns (fewer than 8): the reference's order, fused.
            for jj in j..n {
                for i in 0..m {
                    let mut s = if first { 0.0 } else { c[i * n + jj] };
                    for p in kb..kb + kl {
                        s = a[i * k + p].mul_add(b[p * n + jj], s);
                    }
                    c[i * n + jj] = s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every shape class (row and column tails, several `KB` passes) equals
    /// the reference bit for bit, and a row's output does not depend on `m`.
    #[test]
    fn equals_the_reference_bit_for_bit() {
        for &(m, k, n) in &[(1, 1, 1), (7, 9, 5), (6, 72, 16), (13, 72, 4096 / 64), (128, 72, 40), (5, 600, 72), (17, 300, 24), (3, 1, 33), (4, 0, 9)] {
            let (a, b) = (values(m * k, 1 + m as u32), values(k * n, 7 + n as u32));
            let (mut got, mut want) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            gemm_nn(&a, m, k, &b, n, &mut got);
            gemm_nn_ref(&a, m, k, &b, n, &mut want);
            assert_eq!(got, want, "{m}×{k}·{k}×{n}");
            let mut par = vec![f32::NAN; m * n];
            gemm_nn_parallel(&a, m, k, &b, n, &mut par);
            assert_eq!(par, want, "parallel {m}×{k}·{k}×{n}");
            if m > 1 {
                let mut one = vec![0f32; n];
                gemm_nn(&a[k..2 * k], 1, k, &b, n, &mut one);
                assert_eq!(one, got[n..2 * n], "row 1 alone, {m}×{k}·{k}×{n}");
            }
        }
    }
}
