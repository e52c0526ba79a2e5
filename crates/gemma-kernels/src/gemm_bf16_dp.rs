//! The bf16 prefill GEMM on AVX512-BF16 (`vdpbf16ps`), for CPUs without
//! AMX-BF16 (AMD Zen 4 and later, Intel Cooper Lake): the numerics of the
//! AMX path (`gemm_amx_bf16`: activations rounded to bf16, f32 sums) with
//! 16 rows × one column pair per instruction.
//!
//! Rows are packed as the AMX path packs them (64 rows a task, each column
//! pair's 16-row groups contiguous); a register tile is up to 6 tokens × 64
//! rows (24 accumulators), each activation pair broadcast from memory. Every
//! output sums the column pairs in order whatever the number of tokens, so a
//! prompt's result does not depend on how it is cut into chunks.

#![cfg(target_arch = "x86_64")]

use crate::gemm::OutPtr;
use crate::gemm_amx::Aligned;
use crate::gemm_amx_bf16::{amx_bf16_rows, pack_task, round_acts, Bf16Rows, KB, TILE};
use gemma_core::Matrix;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows of W per task (four 16-row groups, the AMX packing).
const ROWS_PER_TASK: usize = 64;
/// Tokens per register tile.
const MT: usize = 6;

/// Whether this path runs: AVX-512 (with VNNI, the AVX-512 level the other
/// kernels need) and AVX512-BF16, no AMX-BF16 (which is faster), and
/// neither `GEMMA_NO_AVX512` nor `GEMMA_NO_BF16` set.
pub fn has_avx512_bf16() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        crate::gemm::has_avx512_vnni() && !crate::gemm_amx::has_amx_bf16() && std::env::var_os("GEMMA_NO_BF16").is_none() && is_x86_feature_detected!("avx512bf16")
    })
}

thread_local! {
    /// The activations rounded to bf16, `[tokens padded to 32, cp]`.
    static ACTS: RefCell<Aligned> = RefCell::new(Aligned::default());
    /// A task's packed rows, its rows in natural order (bf16, zero padded)
    /// and a dequantized row.
    static ROWS: RefCell<(Aligned, Aligned, Vec<f32>)> = RefCell::new(Default::default());
}

/// `y = bf16(x) · wᵀ` on AVX512-BF16 for a bf16 `w` (with `quantized`,
/// block types too, dequantized to bf16); false (doing nothing) where this
/// path does not run.
pub(crate) fn gemm(x: &[f32], n: usize, w: &Matrix, y: &mut [f32], quantized: bool) -> bool {
    if !has_avx512_bf16() {
        return false;
    }
    let Some(rows) = amx_bf16_rows(w, n, quantized) else { return false };
    assert_eq!(x.len(), n * w.cols, "gemm input has the wrong length");
    assert_eq!(y.len(), n * w.rows, "gemm output has the wrong length");
    // SAFETY: AVX-512 and AVX512-BF16 available (has_avx512_bf16); shapes checked.
    unsafe { gemm_dp(x, n, rows, w.rows, w.cols, y) };
    true
}

/// `T` tokens × 64 rows over `pairs` column pairs: `a` token 0's rounded
/// activations (`sa` bytes a token), `b` the packed rows; the sums written
/// to `y` (`ld` floats a token), rows masked by `mask[g]` per 16-row group.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::needless_range_loop)] // t and g index the accumulators and the rows together
unsafe fn tile<const T: usize>(a: *const u8, sa: usize, b: *const u8, pairs: usize, y: *mut f32, ld: usize, mask: [__mmask16; 4]) {
    let mut acc = [[_mm512_setzero_ps(); 4]; T];
    for p in 0..pairs {
        // Pair p sits in step p/16 at slot p%16: the packing of `pack`.
        // SAFETY (block): the packed rows hold cp/2 pairs × 4 groups; every
        // token's row of activations holds cp/2 pairs.
        unsafe {
            let bp = b.add((p / 16) * 4 * TILE + 64 * (p % 16));
            let bv: [__m512bh; 4] = std::array::from_fn(|g| std::mem::transmute::<__m512i, __m512bh>(_mm512_load_si512(bp.add(g * TILE) as *const _)));
            for t in 0..T {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32((a.add(t * sa + 4 * p) as *const i32).read_unaligned()));
                for g in 0..4 {
                    acc[t][g] = _mm512_dpbf16_ps(acc[t][g], av, bv[g]);
                }
            }
        }
    }
    for t in 0..T {
        for g in 0..4 {
            // SAFETY: token t's row of y holds the task's rows that the mask admits.
            unsafe { _mm512_mask_storeu_ps(y.add(t * ld + 16 * g), mask[g], acc[t][g]) };
        }
    }
}

/// The product.
/// # Safety
/// [`has_avx512_bf16`] true; `w` holds `rows` rows of `cols`, `x: [n, cols]`, `y: [n, rows]`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn gemm_dp(x: &[f32], n: usize, w: Bf16Rows, rows: usize, cols: usize, y: &mut [f32]) {
    let cp = cols.div_ceil(KB) * KB;
    ACTS.with(|acts| {
        let acts = &mut *acts.borrow_mut();
        // SAFETY: AVX-512 available.
        unsafe { round_acts(x, n, cols, cp, acts) };
        let (acts, out) = (&*acts, OutPtr(y.as_mut_ptr()));
        crate::pool::parallel_for(rows.div_ceil(ROWS_PER_TASK), &|task| {
            ROWS.with(|b| {
                let (packed, nat, f) = &mut *b.borrow_mut();
                let r0 = task * ROWS_PER_TASK;
                let nr = ROWS_PER_TASK.min(rows - r0);
                // SAFETY: AVX-512 available (has_avx512_bf16); the rows exist.
                unsafe { pack_task(w, r0, nr, cols, packed, nat, f) };
                let mask: [__mmask16; 4] = std::array::from_fn(|g| ((1u32 << nr.saturating_sub(16 * g).min(16)) - 1) as __mmask16);
                let (sa, pairs) = (cp * 2, cp / 2);
                let mut t = 0;
                while t < n {
                    // SAFETY: tokens t.. are in the rounded activations; y's rows
                    // r0.. of those tokens are this task's alone.
                    unsafe {
                        let (a, yt) = (acts.ptr().add(t * sa), out.ptr().add(t * rows + r0));
                        match n - t {
                            1 => tile::<1>(a, sa, packed.ptr(), pairs, yt, rows, mask),
                            2 => tile::<2>(a, sa, packed.ptr(), pairs, yt, rows, mask),
                            3 => tile::<3>(a, sa, packed.ptr(), pairs, yt, rows, mask),
                            4 => tile::<4>(a, sa, packed.ptr(), pairs, yt, rows, mask),
                            5 => tile::<5>(a, sa, packed.ptr(), pairs, yt, rows, mask),
                            _ => tile::<MT>(a, sa, packed.ptr(), pairs, yt, rows, mask),
                        }
                    }
                    t += MT;
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::{DType, Storage};
    use half::bf16;

    /// bf16 and quantized weights, padded rows and columns, token counts
    /// around the register tile: within f32 rounding of the exact product
    /// of the rounded operands, and every token the same whatever `n`.
    #[test]
    fn matches_the_rounded_product_and_is_chunk_invariant() {
        if !has_avx512_bf16() {
            eprintln!("no AVX512-BF16 here, or AMX-BF16 takes bf16 (GEMMA_NO_AMX=1 tests this path): skipped");
            return;
        }
        for (dtype, rows, cols) in [(DType::BF16, 64, 64), (DType::BF16, 37, 96), (DType::BF16, 130, 1152), (DType::BF16, 20, 72), (DType::Q4_K, 70, 512), (DType::Q8_0, 33, 96)] {
            let vals: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1999) as f32 / 999.5 - 1.0) * 0.3).collect();
            let w = Matrix { rows, cols, storage: gemma_quant::convert(Storage::F32(vals), dtype).unwrap() };
            let mut wv = vec![0f32; rows * cols];
            gemma_quant::read_f32(&w.storage, 0, &mut wv);
            let wb: Vec<f64> = wv.iter().map(|&v| f64::from(bf16::from_f32(v).to_f32())).collect();
            let x: Vec<f32> = (0..40 * cols).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * (1.0 + (i % 5) as f32)).collect();
            let mut all = vec![0f32; 40 * rows];
            assert!(gemm(&x, 40, &w, &mut all, true), "{dtype:?}");
            for t in 0..40 {
                for r in 0..rows {
                    let e: f64 = (0..cols).map(|c| f64::from(bf16::from_f32(x[t * cols + c]).to_f32()) * wb[r * cols + c]).sum();
                    let g = f64::from(all[t * rows + r]);
                    assert!((g - e).abs() <= 1e-5 * (cols as f64).sqrt() * (1.0 + e.abs()), "{dtype:?} {rows}x{cols} [{t},{r}]: {g} vs {e}");
                }
            }
            for n in [4, 5, 6, 7, 13] {
                let mut part = vec![0f32; n * rows];
                assert!(gemm(&x[..n * cols], n, &w, &mut part, true));
                assert!(part.iter().zip(&all).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?} n={n} differs from n=40");
            }
        }
    }
}
