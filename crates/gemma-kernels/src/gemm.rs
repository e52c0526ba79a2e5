//! Quantized products over 8-bit activations, `y[t, r] = x[t, :] · w[r, :]`:
//! the activation format shared by the AVX-512 VNNI kernels (`QuantActs`,
//! quantized exactly as ggml quantizes activations), its quantizers, the
//! CPU-feature check, and `gemm_quant`: the prefill GEMM, which runs
//! `gemm_packed` on AVX-512 VNNI and, as the scalar reference the SIMD
//! kernels are tested against, multiplies level-form rows
//! (`w = s·(q − offset) − m` per 16 columns, [`gemma_quant::levels`]) with
//! the 8-bit activations one (row, token) at a time.

use crate::dot::{simd_level, SimdLevel};
use crate::pool::parallel_for;
use gemma_core::{Matrix, Storage};
use gemma_quant::act::{act_kind, ActKind};
use gemma_quant::levels::{level_form, unpack_levels, LevelForm};
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows of W unpacked and handled by one task.
const ROWS_PER_TASK: usize = 16;
/// Fewest tokens that take the GEMM (AVX-512 and AVX2 alike). On AVX2 the
/// per-row multi-token kernels are faster below ~16 tokens (one thread, Q4_K
/// 10240×2560: 68 vs 51 GOP/s at 8 tokens), but a prompt must give the same
/// result however it is cut into chunks (a 7-token chunk on the other path
/// flipped a greedy near-tie of the real model after 14 tokens), so the
/// path changes only where decoding begins.
pub const MIN_TOKENS: usize = 4;

/// Fewest tokens that take the AMX tiles (16 tokens a tile; the result is
/// bit-identical to the VNNI GEMM's, so the threshold is speed alone: on
/// a 2-core Xeon, even with VNNI at 16 tokens, 1.1–1.2× at 32, 1.35–1.65×
/// at 512; `examples/gemm_bench.rs`).
pub const AMX_MIN_TOKENS: usize = 32;

/// Tokens are padded to a multiple of this (zero rows).
const PAD: usize = 4;

/// Activations quantized for the VNNI kernels, padded to a multiple of [`PAD`] tokens.
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

/// Whether this CPU has the AVX-512 VNNI path (F, BW, DQ, VNNI; detected once; off with
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
                && is_x86_feature_detected!("avx512dq")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (simd_level, SimdLevel::Scalar);
            false
        }
    })
}

/// Whether the AVX2 GEMM runs on this CPU (AVX2/FMA without AVX-512
/// VNNI, not forced scalar).
pub fn has_avx2_gemm() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_level() == SimdLevel::Avx2 && !has_avx512_vnni()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `(multiplier, scale)` of an activation block from its largest and
/// smallest value, as ggml quantizes activations: Q8_K from the signed
/// extreme, else Q8_0 from the absolute maximum with the scale rounded to
/// f16. Levels are `min(round(x · multiplier), 127)`.
pub(crate) fn scale_from_extremes(mx: f32, mn: f32, kind: ActKind) -> (f32, f32) {
    if kind == ActKind::Q8K {
        let max = if mx >= -mn { mx } else { mn };
        if max == 0.0 {
            return (0.0, 0.0);
        }
        let iscale = -127.0 / max;
        (iscale, 1.0 / iscale)
    } else {
        let amax = mx.max(-mn).max(0.0);
        (if amax != 0.0 { 127.0 / amax } else { 0.0 }, half::f16::from_f32(amax / 127.0).to_f32())
    }
}

/// Scalar reference: quantize `x: [n, cols]` (cols a multiple of 32, of
/// 256 for [`ActKind::Q8K`]) as llama.cpp quantizes activations for the
/// weight type: Q8_0/Q8_1 blocks of 32 with the scale rounded to f16, or
/// Q8_K blocks of 256 with an f32 scale. Rounding is to nearest-even.
pub fn quantize_acts_ref(x: &[f32], n: usize, cols: usize, kind: ActKind, out: &mut QuantActs) {
    prepare(out, n, cols);
    let block = if kind == ActKind::Q8K { 256 } else { 32 };
    for t in 0..n {
        for b in 0..cols / block {
            let at = t * cols + block * b;
            let v = &x[at..at + block];
            let q = &mut out.qs[at..at + block];
            let d = match kind {
                ActKind::Q8K => {
                    let mx = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mn = v.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = if mx >= -mn { mx } else { mn };
                    if max == 0.0 {
                        q.fill(0);
                        0.0
                    } else {
                        let iscale = -127.0 / max;
                        for (q, x) in q.iter_mut().zip(v) {
                            *q = ((iscale * x).round_ties_even() as i32).min(127) as i8;
                        }
                        1.0 / iscale
                    }
                }
                _ => {
                    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                    // ggml's x86 quantizer: multiplier 127/amax (not 1/d,
                    // which differs in the last bit and flips some levels).
                    let d = amax / 127.0;
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    for (q, x) in q.iter_mut().zip(v) {
                        *q = (x * id).round_ties_even() as i8;
                    }
                    half::f16::from_f32(d).to_f32()
                }
            };
            for (h, g) in q.chunks_exact(16).enumerate() {
                let sum: i32 = g.iter().map(|&v| v as i32).sum();
                out.d16[at / 16 + h] = d;
                out.xs[at / 16 + h] = d * sum as f32;
            }
        }
    }
}

fn prepare(out: &mut QuantActs, n: usize, cols: usize) {
    let np = n.div_ceil(PAD) * PAD;
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
pub fn quantize_acts(x: &[f32], n: usize, cols: usize, kind: ActKind, out: &mut QuantActs) {
    let block = if kind == ActKind::Q8K { 256 } else { 32 };
    assert!(cols.is_multiple_of(block) && x.len() == n * cols, "activations must be [n, cols] with cols a multiple of {block}");
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vnni() {
        prepare(out, n, cols);
        // SAFETY: AVX-512 F/BW were detected at run time; the buffers hold
        // [n, cols] values (prepare sized them for at least n tokens).
        unsafe { avx512::quantize(x, n, cols, kind, out) };
        return;
    }
    quantize_acts_ref(x, n, cols, kind, out)
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

/// Rows per tile of the packed (AVX-512) GEMM.
pub(crate) const R_PACKED: usize = 4;
/// Tokens per tile of the packed (AVX-512) GEMM.
pub(crate) const T_PACKED: usize = 2;

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every task writes only the columns of its own rows.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the Sync wrapper).
    pub(crate) fn ptr(&self) -> *mut f32 {
        self.0
    }

    /// Write `v` at element `i`.
    /// SAFETY: `i` is in bounds and no other task writes element `i`.
    pub(crate) unsafe fn write(&self, i: usize, v: f32) {
        unsafe { *self.0.add(i) = v };
    }

    /// Write the first `len` values of `v` at elements `i..i + len`.
    /// SAFETY: as [`OutPtr::write`] for each element.
    pub(crate) unsafe fn write_run<const N: usize>(&self, i: usize, v: [f32; N], len: usize) {
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.0.add(i), len.min(N)) };
    }
}

/// One task's share of a tiled GEMM: `tile(i0, t0)` gives the outputs of
/// rows `r0 + i0..r0 + i0 + R` and tokens `t0..t0 + T`, for every tile over
/// the task's `nr` rows (padded to `R`) and the `n` tokens; the valid ones
/// are written into `y: [n, rows]` through `out`.
/// # Safety
/// `out` points at `y` ([n, rows], r0 + nr <= rows) and this task alone
/// writes rows `r0..r0 + nr`.
pub(crate) unsafe fn run_tiles<const R: usize, const T: usize>(out: OutPtr, rows: usize, r0: usize, nr: usize, n: usize, tile: impl Fn(usize, usize) -> [[f32; T]; R]) {
    for t0 in (0..n).step_by(T) {
        for i0 in (0..nr.div_ceil(R) * R).step_by(R) {
            let v = tile(i0, t0);
            let valid = R.min(nr.saturating_sub(i0));
            #[allow(clippy::needless_range_loop)] // j picks a column of the tile
            for j in 0..T.min(n - t0) {
                // SAFETY: (t0 + j, r0 + i0 .. r0 + i0 + valid) is in y, and only
                // this task writes rows r0..r0 + nr (the caller's contract).
                unsafe { out.write_run((t0 + j) * rows + r0 + i0, std::array::from_fn::<f32, R, _>(|i| v[i][j]), valid) };
            }
        }
    }
}

/// `y[t, r] = x[t, :] · w[r, :]` with `x: [n, cols]`, `y: [n, rows]`, for a
/// quantized `w` with a level form. Returns false (doing nothing) when this
/// path does not apply: float or Q2_K/Q3_K weights, columns not a multiple of
/// 64, or a CPU without AVX-512 VNNI and `force_ref` off.
pub fn gemm_quant(x: &[f32], n: usize, w: &Matrix, y: &mut [f32], force_ref: bool) -> bool {
    let Storage::Raw { dtype, bytes, .. } = &w.storage else { return false };
    let Some(form) = level_form(*dtype) else { return false };
    let Some(kind) = act_kind(*dtype) else { return false };
    let (rows, cols) = (w.rows, w.cols);
    let shapes_ok = kind != ActKind::Q8K || cols.is_multiple_of(256);
    let simd = has_avx512_vnni() && !force_ref && shapes_ok;
    let avx2 = !simd && !force_ref && shapes_ok && has_avx2_gemm();
    if !cols.is_multiple_of(64) || !(simd || avx2 || force_ref) || n == 0 {
        return false;
    }
    assert_eq!(x.len(), n * cols, "gemm input has the wrong length");
    assert_eq!(y.len(), n * rows, "gemm output has the wrong length");
    #[cfg(target_arch = "x86_64")]
    if simd && n >= AMX_MIN_TOKENS && crate::gemm_amx::has_amx() {
        // SAFETY: AMX and AVX-512 VNNI detected, tile state granted; shapes checked above.
        unsafe { crate::gemm_amx::gemm(x, n, *dtype, form, kind, bytes.as_slice(), rows, cols, y) };
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX-512 VNNI detected; shapes checked above.
        unsafe { crate::gemm_packed::gemm(x, n, *dtype, form, kind, bytes.as_slice(), rows, cols, y) };
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2/FMA detected (has_avx2_gemm); shapes checked above.
        unsafe { crate::gemm_avx2::gemm(x, n, *dtype, form, kind, bytes.as_slice(), rows, cols, y) };
        return true;
    }
    // The scalar reference: level form and 8-bit activations, one (row, token) at a time.
    let mut acts = QuantActs::default();
    quantize_acts_ref(x, n, cols, kind, &mut acts);
    let (dtype, rb, ng) = (*dtype, w.row_bytes(), cols / 16);
    let data = bytes.as_slice();
    let out = OutPtr(y.as_mut_ptr());
    parallel_for(rows.div_ceil(ROWS_PER_TASK), &|task| {
        SCRATCH.with(|lv| {
            let lv = &mut *lv.borrow_mut();
            let r0 = task * ROWS_PER_TASK;
            let nr = ROWS_PER_TASK.min(rows - r0);
            lv.q.resize(nr * cols, 0);
            lv.s.resize(nr * ng, 0.0);
            lv.m.resize(nr * ng, 0.0);
            for i in 0..nr {
                let row = &data[(r0 + i) * rb..(r0 + i + 1) * rb];
                unpack_levels(dtype, row, &mut lv.q[i * cols..(i + 1) * cols], &mut lv.s[i * ng..(i + 1) * ng], &mut lv.m[i * ng..(i + 1) * ng]);
                for t in 0..n {
                    // SAFETY: (t, r0 + i) is in y; this task alone writes rows r0..r0+nr.
                    unsafe { out.write(t * rows + r0 + i, dot_ref(lv, i, &acts, t, form)) };
                }
            }
        });
    });
    true
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::QuantActs;
    use gemma_quant::act::ActKind;
    use std::arch::x86_64::*;

    /// `(multiplier, scale)` of the block of `block` values at `x`, as ggml
    /// quantizes activations: Q8_K from the signed extreme, else Q8_0 from
    /// the absolute maximum with the scale rounded to f16. Levels are
    /// `min(round(x · multiplier), 127)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn block_scale(x: *const f32, block: usize, kind: ActKind) -> (f32, f32) {
        let (mut mx, mut mn) = (_mm512_set1_ps(f32::NEG_INFINITY), _mm512_set1_ps(f32::INFINITY));
        for i in (0..block).step_by(16) {
            let v = _mm512_loadu_ps(x.add(i));
            mx = _mm512_max_ps(mx, v);
            mn = _mm512_min_ps(mn, v);
        }
        super::scale_from_extremes(_mm512_reduce_max_ps(mx), _mm512_reduce_min_ps(mn), kind)
    }

    /// The levels of 16 values at `x` (see [`block_scale`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn levels16(x: *const f32, mul: f32) -> __m512i {
        _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), _mm512_set1_ps(mul))), _mm512_set1_epi32(127))
    }

    /// Quantize `x: [n, cols]` as the reference does, 16 values at a time,
    /// handing each group to `put(token, group, levels as 16 i8, scale,
    /// scale · Σ levels)`: one quantizer for every activation layout.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn for_each_group(x: &[f32], n: usize, cols: usize, kind: ActKind, mut put: impl FnMut(usize, usize, __m128i, f32, f32)) {
        let block = if kind == ActKind::Q8K { 256 } else { 32 };
        let xp = x.as_ptr();
        for t in 0..n {
            for b in 0..cols / block {
                let at = t * cols + b * block;
                let (mul, d) = block_scale(xp.add(at), block, kind);
                for i in (0..block).step_by(16) {
                    let q = levels16(xp.add(at + i), mul);
                    put(t, (b * block + i) / 16, _mm512_cvtsepi32_epi8(q), d, d * _mm512_reduce_add_epi32(q) as f32);
                }
            }
        }
    }

    /// Quantize `x: [n, cols]` into the prepared `out` (as the reference).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn quantize(x: &[f32], n: usize, cols: usize, kind: ActKind, out: &mut QuantActs) {
        let ng = cols / 16;
        let qp = out.qs.as_mut_ptr();
        for_each_group(x, n, cols, kind, |t, g, bytes, d, xs| {
            _mm_storeu_si128(qp.add(t * cols + 16 * g) as *mut __m128i, bytes);
            out.d16[t * ng + g] = d;
            out.xs[t * ng + g] = xs;
        });
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
        let (_, mut x) = inputs(1, 512, 7);
        x[256..512].fill(0.0); // an all-zero block
        for kind in [ActKind::Q8_0, ActKind::Q8K] {
            let (mut a, mut b) = (QuantActs::default(), QuantActs::default());
            quantize_acts(&x, 7, 512, kind, &mut a);
            quantize_acts_ref(&x, 7, 512, kind, &mut b);
            assert_eq!(a, b, "{kind:?}");
            assert_eq!(a.n, 8);
        }
    }

    /// The Q8_K quantization is llama.cpp's (gemma-quant's ActQ8) up to
    /// rounding ties.
    #[test]
    fn q8k_matches_the_ggml_activation_format() {
        let (_, x) = inputs(1, 512, 1);
        let mut a = QuantActs::default();
        quantize_acts_ref(&x, 1, 512, ActKind::Q8K, &mut a);
        let mut g = gemma_quant::act::ActQ8::default();
        g.quantize(ActKind::Q8K, &x);
        let diff = a.qs[..512].iter().zip(&g.qs).filter(|(p, q)| p != q).count();
        assert!(diff <= 2, "{diff} levels differ");
        assert_eq!(a.d16[0], g.d[0]);
    }

    /// Every type with a level form, odd row and token counts: the SIMD
    /// GEMM equals the scalar reference GEMM, which equals the f64 product
    /// of the dequantized weights and the dequantized 8-bit activations.
    #[test]
    fn gemm_matches_reference_for_every_level_type() {
        for (dt, cols) in ALL_DTYPES.iter().flat_map(|&dt| [(dt, 256usize), (dt, 640)]) {
            let rows = 19;
            // 640 columns (Gemma 3 270M's hidden size) exercise the padding
            // to whole 256-column super-chunks; K-quants need multiples of 256.
            if level_form(dt).is_none() || !cols.is_multiple_of(dt.block_size()) {
                continue;
            }
            let (wv, x) = inputs(rows, cols, 17);
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            let mut deq = vec![0f32; rows * cols];
            gemma_quant::dequantize(dt, &raw, &mut deq);
            let w = Matrix::new(rows, cols, Storage::Raw { dtype: dt, len: rows * cols, bytes: Bytes::Owned(raw) });
            for n in [4, 5, 9, 17] {
                let x = &x[..n * cols];
                let mut want = vec![0f32; n * rows];
                assert!(gemm_quant(x, n, &w, &mut want, true));
                let mut a = QuantActs::default();
                quantize_acts_ref(x, n, cols, act_kind(dt).unwrap(), &mut a);
                for t in 0..n {
                    for r in 0..rows {
                        let exact: f64 =
                            (0..cols).map(|c| deq[r * cols + c] as f64 * a.qs[t * cols + c] as f64 * a.d16[t * cols / 16 + c / 16] as f64).sum();
                        let got = want[t * rows + r] as f64;
                        assert!((got - exact).abs() < 1e-4 * exact.abs().max(1.0), "{dt} ref n={n} t={t} r={r}: {got} vs {exact}");
                    }
                }
                if has_avx512_vnni() || has_avx2_gemm() {
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
