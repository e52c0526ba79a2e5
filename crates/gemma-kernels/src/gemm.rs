//! Prefill GEMM for quantized weights, `y[t, r] = x[t, :] · w[r, :]` for
//! many tokens at once.
//!
//! Weight rows are unpacked once per call into level form
//! (`w = s·(q − offset) − m` per 16 columns, [`gemma_quant::levels`]) into a
//! small per-thread buffer that stays in cache while every token meets it;
//! activations are quantized once per call to i8 with one f32 scale per 32
//! columns. A 4-row × 4-token tile then accumulates exact integer products
//! of 4 columns per 32-bit lane (u8 × i8, AVX-512 VNNI `vpdpbusd`; the
//! offset is folded into the accumulator's start value) and applies the
//! float scales per 16 columns. Mins (Q4_K, Q4_1, …) add one small float
//! dot per row and token.

use crate::dot::{simd_level, SimdLevel};
use gemma_core::{Matrix, Storage};
use gemma_quant::levels::{level_form, unpack_levels, LevelForm};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows per tile.
const R: usize = 4;
/// Tokens per tile.
const T: usize = 4;
/// Rows of W unpacked and handled by one task.
const ROWS_PER_TASK: usize = 16;
/// Fewest tokens for which the GEMM beats the per-row dot kernels.
pub const MIN_TOKENS: usize = 4;

/// Activations quantized for the GEMM, padded to a multiple of [`T`] tokens.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QuantActs {
    /// Tokens, including the zero padding.
    pub n: usize,
    /// Columns.
    pub cols: usize,
    /// Levels, `[n, cols]`.
    pub qs: Vec<i8>,
    /// Scale of each 16 columns (each 32-column block's scale, twice), `[n, cols/16]`.
    pub d16: Vec<f32>,
    /// `scale · Σ levels` of each 16 columns, `[n, cols/16]`.
    pub xs: Vec<f32>,
}

/// Whether this CPU has the AVX-512 VNNI path (detected once; off with
/// `GEMMA_FORCE_SCALAR` or `GEMMA_NO_AVX512`).
pub fn has_avx512_vnni() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            simd_level() == SimdLevel::Avx2
                && std::env::var_os("GEMMA_NO_AVX512").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (simd_level, SimdLevel::Scalar);
            false
        }
    })
}

/// Scalar reference: quantize `x: [n, cols]` (cols a multiple of 32).
pub fn quantize_acts_ref(x: &[f32], n: usize, cols: usize, out: &mut QuantActs) {
    prepare(out, n, cols);
    for t in 0..n {
        for b in 0..cols / 32 {
            let v = &x[t * cols + 32 * b..t * cols + 32 * b + 32];
            let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let (d, id) = if amax > 0.0 { (amax / 127.0, 127.0 / amax) } else { (0.0, 0.0) };
            let q = &mut out.qs[t * cols + 32 * b..t * cols + 32 * b + 32];
            for (q, x) in q.iter_mut().zip(v) {
                *q = (x * id).round_ties_even() as i8;
            }
            let g = t * cols / 16 + 2 * b;
            for h in 0..2 {
                let sum: i32 = q[16 * h..16 * h + 16].iter().map(|&v| v as i32).sum();
                out.d16[g + h] = d;
                out.xs[g + h] = d * sum as f32;
            }
        }
    }
}

fn prepare(out: &mut QuantActs, n: usize, cols: usize) {
    let np = n.div_ceil(T) * T;
    out.n = np;
    out.cols = cols;
    out.qs.clear();
    out.qs.resize(np * cols, 0);
    out.d16.clear();
    out.d16.resize(np * cols / 16, 0.0);
    out.xs.clear();
    out.xs.resize(np * cols / 16, 0.0);
}

/// Quantize `x: [n, cols]` for the GEMM (SIMD where available; identical
/// results to [`quantize_acts_ref`]).
pub fn quantize_acts(x: &[f32], n: usize, cols: usize, out: &mut QuantActs) {
    assert!(cols.is_multiple_of(32) && x.len() == n * cols, "activations must be [n, cols] with cols a multiple of 32");
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vnni() {
        prepare(out, n, cols);
        // SAFETY: AVX-512 F/BW were detected at run time; the buffers hold
        // [n, cols] values (prepare sized them for at least n tokens).
        unsafe { avx512::quantize(x, n, cols, out) };
        return;
    }
    quantize_acts_ref(x, n, cols, out)
}

/// Weight rows in level form, `[rows, cols]` levels and `[rows, cols/16]`
/// scales and mins.
#[derive(Debug, Default)]
struct Levels {
    q: Vec<u8>,
    s: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Levels> = RefCell::new(Levels::default());
}

/// Scalar reference of one output: row `r` of the unpacked levels times token `t`.
fn dot_ref(lv: &Levels, r: usize, a: &QuantActs, t: usize, form: LevelForm) -> f32 {
    let (cols, ng) = (a.cols, a.cols / 16);
    let mut sum = 0f32;
    for g in 0..ng {
        let mut acc = 0i32;
        for c in 16 * g..16 * g + 16 {
            acc += (lv.q[r * cols + c] as i32 - form.offset as i32) * a.qs[t * cols + c] as i32;
        }
        sum += lv.s[r * ng + g] * a.d16[t * ng + g] * acc as f32 - lv.m[r * ng + g] * a.xs[t * ng + g];
    }
    sum
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the columns of its own rows.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `y[t, r] = x[t, :] · w[r, :]` with `x: [n, cols]`, `y: [n, rows]`, for a
/// quantized `w` with a level form. Returns false (doing nothing) when this
/// path does not apply: float or Q2_K/Q3_K weights, columns not a multiple of
/// 64, or a CPU without AVX-512 VNNI and `force_ref` off.
pub fn gemm_quant(x: &[f32], n: usize, w: &Matrix, y: &mut [f32], force_ref: bool) -> bool {
    let Storage::Raw { dtype, bytes, .. } = &w.storage else { return false };
    let Some(form) = level_form(*dtype) else { return false };
    let (rows, cols) = (w.rows, w.cols);
    let simd = has_avx512_vnni() && !force_ref;
    if !cols.is_multiple_of(64) || !(simd || force_ref) || n == 0 {
        return false;
    }
    assert_eq!(x.len(), n * cols, "gemm input has the wrong length");
    assert_eq!(y.len(), n * rows, "gemm output has the wrong length");
    let mut acts = QuantActs::default();
    if simd {
        quantize_acts(x, n, cols, &mut acts);
    } else {
        quantize_acts_ref(x, n, cols, &mut acts);
    }
    let (dtype, rb, ng) = (*dtype, w.row_bytes(), cols / 16);
    let data = bytes.as_slice();
    let out = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each(|task| {
        let out = out;
        SCRATCH.with(|lv| {
            let mut lv = lv.borrow_mut();
            let r0 = task * ROWS_PER_TASK;
            let nr = ROWS_PER_TASK.min(rows - r0);
            let nr_pad = nr.div_ceil(R) * R;
            let lv = &mut *lv;
            lv.q.resize(nr_pad * cols, 0);
            lv.s.resize(nr_pad * ng, 0.0);
            lv.m.resize(nr_pad * ng, 0.0);
            for i in 0..nr_pad {
                let (q, s, m) = (&mut lv.q[i * cols..(i + 1) * cols], &mut lv.s[i * ng..(i + 1) * ng], &mut lv.m[i * ng..(i + 1) * ng]);
                if i < nr {
                    let r = r0 + i;
                    unpack_levels(dtype, &data[r * rb..(r + 1) * rb], q, s, m);
                } else {
                    // Padding rows contribute nothing.
                    q.fill(form.offset);
                    s.fill(0.0);
                    m.fill(0.0);
                }
            }
            let mut tile = [[0f32; T]; R];
            for t0 in (0..n).step_by(T) {
                for i0 in (0..nr_pad).step_by(R) {
                    if simd {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX-512 VNNI detected; the tile reads rows
                        // i0..i0+R of the levels and tokens t0..t0+T of the
                        // padded activations, all in bounds.
                        unsafe {
                            avx512::tile(lv, i0, &acts, t0, form, &mut tile)
                        };
                    } else {
                        for (i, tr) in tile.iter_mut().enumerate() {
                            for (j, v) in tr.iter_mut().enumerate() {
                                *v = dot_ref(lv, i0 + i, &acts, t0 + j, form);
                            }
                        }
                    }
                    for (i, tr) in tile.iter().enumerate().take(nr - i0.min(nr)) {
                        for (j, &v) in tr.iter().enumerate().take(n - t0) {
                            // SAFETY: t0 + j < n and r0 + i0 + i < rows: in
                            // bounds; this task alone writes rows r0..r0+nr.
                            unsafe { *out.0.add((t0 + j) * rows + r0 + i0 + i) = v };
                        }
                    }
                }
            }
        });
    });
    true
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Levels, QuantActs, R, T};
    use gemma_quant::levels::LevelForm;
    use std::arch::x86_64::*;

    /// Quantize `n` tokens of `x` into the prepared `out` (as the reference).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn quantize(x: &[f32], n: usize, cols: usize, out: &mut QuantActs) {
        let (xp, qp) = (x.as_ptr(), out.qs.as_mut_ptr());
        for i in 0..n * cols / 32 {
            let v0 = _mm512_loadu_ps(xp.add(32 * i));
            let v1 = _mm512_loadu_ps(xp.add(32 * i + 16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let (d, id) = if amax > 0.0 { (amax / 127.0, 127.0 / amax) } else { (0.0, 0.0) };
            let idv = _mm512_set1_ps(id);
            let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, idv));
            let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, idv));
            _mm_storeu_si128(qp.add(32 * i) as *mut __m128i, _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128(qp.add(32 * i + 16) as *mut __m128i, _mm512_cvtsepi32_epi8(q1));
            out.d16[2 * i] = d;
            out.d16[2 * i + 1] = d;
            out.xs[2 * i] = d * _mm512_reduce_add_epi32(q0) as f32;
            out.xs[2 * i + 1] = d * _mm512_reduce_add_epi32(q1) as f32;
        }
    }

    /// Rows `i0..i0+R` of `lv` times tokens `t0..t0+T` of `a` into `tile`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile(lv: &Levels, i0: usize, a: &QuantActs, t0: usize, form: LevelForm, tile: &mut [[f32; T]; R]) {
        let cols = a.cols;
        let ng = cols / 16;
        let wq = lv.q.as_ptr().add(i0 * cols);
        let ws = lv.s.as_ptr().add(i0 * ng);
        let xq = a.qs.as_ptr().add(t0 * cols);
        let xd = a.d16.as_ptr().add(t0 * ng);
        // Lane l of a 64-column chunk covers columns 4l..4l+3: group l / 4.
        let idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let ov = _mm512_set1_epi8(form.offset as i8);
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        for c in 0..cols / 64 {
            let mut w = [zero; R];
            let mut sw = [_mm512_setzero_ps(); R];
            for r in 0..R {
                w[r] = _mm512_loadu_si512(wq.add(r * cols + 64 * c) as *const _);
                sw[r] = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_loadu_ps(ws.add(r * ng + 4 * c))));
            }
            for t in 0..T {
                let x = _mm512_loadu_si512(xq.add(t * cols + 64 * c) as *const _);
                let sx = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_loadu_ps(xd.add(t * ng + 4 * c))));
                // Start each lane at −offset · Σx so the dot gives Σ (q − offset)·x.
                let base = if form.offset != 0 { _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, ov, x)) } else { zero };
                for r in 0..R {
                    let dp = _mm512_dpbusd_epi32(base, w[r], x);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), _mm512_mul_ps(sw[r], sx), acc[r][t]);
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                tile[r][t] = _mm512_reduce_add_ps(acc[r][t]);
            }
        }
        if form.has_min {
            let wm = lv.m.as_ptr().add(i0 * ng);
            let xs = a.xs.as_ptr().add(t0 * ng);
            for r in 0..R {
                for t in 0..T {
                    let mut s = _mm512_setzero_ps();
                    for g in (0..ng).step_by(16) {
                        let k = (ng - g).min(16);
                        let mask: __mmask16 = if k == 16 { 0xFFFF } else { (1u16 << k) - 1 };
                        let mv = _mm512_maskz_loadu_ps(mask, wm.add(r * ng + g));
                        let xv = _mm512_maskz_loadu_ps(mask, xs.add(t * ng + g));
                        s = _mm512_fmadd_ps(mv, xv, s);
                    }
                    tile[r][t] -= _mm512_reduce_add_ps(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::tensor::{Bytes, ALL_DTYPES};

    fn inputs(rows: usize, cols: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let w = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.45) * 0.2).collect();
        let x = (0..n * cols).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * (1.0 + (i % 5) as f32)).collect();
        (w, x)
    }

    #[test]
    fn simd_quantization_equals_the_reference() {
        let (_, x) = inputs(1, 128, 7);
        let (mut a, mut b) = (QuantActs::default(), QuantActs::default());
        quantize_acts(&x, 7, 128, &mut a);
        quantize_acts_ref(&x, 7, 128, &mut b);
        assert_eq!(a, b);
        assert_eq!(a.n, 8);
    }

    /// Every type with a level form, odd row and token counts: the SIMD
    /// GEMM equals the scalar reference GEMM, which equals the f64 product
    /// of the dequantized weights and the dequantized 8-bit activations.
    #[test]
    fn gemm_matches_reference_for_every_level_type() {
        let (rows, cols) = (19, 256);
        for dt in ALL_DTYPES {
            if level_form(dt).is_none() {
                continue;
            }
            let (wv, x) = inputs(rows, cols, 9);
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            let mut deq = vec![0f32; rows * cols];
            gemma_quant::dequantize(dt, &raw, &mut deq);
            let w = Matrix::new(rows, cols, Storage::Raw { dtype: dt, len: rows * cols, bytes: Bytes::Owned(raw) });
            for n in [4, 5, 9] {
                let x = &x[..n * cols];
                let mut want = vec![0f32; n * rows];
                assert!(gemm_quant(x, n, &w, &mut want, true));
                let mut a = QuantActs::default();
                quantize_acts_ref(x, n, cols, &mut a);
                for t in 0..n {
                    for r in 0..rows {
                        let exact: f64 = (0..cols)
                            .map(|c| deq[r * cols + c] as f64 * a.qs[t * cols + c] as f64 * a.d16[t * cols / 16 + c / 16] as f64)
                            .sum();
                        let got = want[t * rows + r] as f64;
                        assert!((got - exact).abs() < 1e-4 * exact.abs().max(1.0), "{dt} ref n={n} t={t} r={r}: {got} vs {exact}");
                    }
                }
                if has_avx512_vnni() {
                    let mut got = vec![0f32; n * rows];
                    assert!(gemm_quant(x, n, &w, &mut got, false));
                    for (g, e) in got.iter().zip(&want) {
                        assert!((g - e).abs() < 1e-5 * e.abs().max(1.0), "{dt} simd n={n}: {g} vs {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn declines_what_it_cannot_do() {
        let w = Matrix::new(2, 64, Storage::F32(vec![0.0; 128]));
        assert!(!gemm_quant(&[0.0; 128], 2, &w, &mut [0.0; 4], true));
        let mut raw = Vec::new();
        gemma_quant::quantize(gemma_core::DType::Q8_0, &[0.5; 96], &mut raw).unwrap();
        let w = Matrix::new(1, 96, Storage::Raw { dtype: gemma_core::DType::Q8_0, len: 96, bytes: Bytes::Owned(raw) });
        assert!(!gemm_quant(&[0.0; 96], 1, &w, &mut [0.0; 1], true), "96 columns is not a multiple of 64");
    }
}
