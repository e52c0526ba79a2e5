//! The AVX-512 VNNI prefill GEMM (the fast path of `gemm::gemm_quant`).
//!
//! Columns are regrouped so that integer sums never need a horizontal step:
//! in each super-chunk of 256 columns (16 groups of 16, one scale each),
//! 64-byte chunk `k` holds columns `4k..4k+3` of every group, so 32-bit lane
//! `g` of `vpdpbusd` always accumulates group `g`. Four `vpdpbusd` finish a
//! super-chunk's 16 group sums in integer; one convert, one multiply by the
//! 16 group scales and one FMA add them to the float accumulator — against
//! four of each per 256 columns in natural order.
//!
//! Activations are the unsigned operand (`x + 128`), weights the signed one
//! (`q − offset`), so every level-form type fits; the `+128` is removed by
//! starting each lane at `−128 · Σ(q − offset)` of its group. Columns are
//! padded to a multiple of 256 with zero weights.

#![cfg(target_arch = "x86_64")]

use crate::gemm::avx512::for_each_group;
use crate::gemm::{OutPtr, R_PACKED as R, T_PACKED as T};

const _: () = assert!(R * T == 8, "the tile reduction sums exactly 8 accumulators");
use gemma_core::DType;
use gemma_quant::act::ActKind;
use gemma_quant::levels::{unpack_levels, LevelForm};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of W packed and handled by one task.
const ROWS_PER_TASK: usize = 16;

/// Activations in packed column order, `n` padded to a multiple of [`T`].
#[derive(Debug, Default)]
pub(crate) struct PackedActs {
    /// Tokens, padded.
    pub(crate) n: usize,
    /// Padded columns (a multiple of 256).
    pub(crate) cp: usize,
    /// `x + 128`, `[n, cp]` in packed order.
    pub(crate) xu: Vec<u8>,
    /// Scale of each group of 16, `[n, cp/16]`, natural group order.
    pub(crate) d16: Vec<f32>,
    /// `scale · Σ levels` of each group, `[n, cp/16]`.
    pub(crate) xs: Vec<f32>,
}

/// Packed weight rows of one task.
#[derive(Debug, Default)]
pub(crate) struct PackedRows {
    /// `q − offset` as i8, `[rows, cp]` in packed order.
    pub(crate) wq: Vec<u8>,
    /// Group scales, mins and lane starts `−128 · Σ(q − offset)`, `[rows, cp/16]`.
    pub(crate) ws: Vec<f32>,
    pub(crate) wm: Vec<f32>,
    pub(crate) wb: Vec<i32>,
    /// One natural-order row (levels, scales, mins) before packing.
    pub(crate) nq: Vec<u8>,
    pub(crate) ns: Vec<f32>,
    pub(crate) nm: Vec<f32>,
}

impl PackedRows {
    /// Size the buffers for `nr_pad` rows of `cols` columns (`cp` padded).
    pub(crate) fn prepare(&mut self, nr_pad: usize, cols: usize, cp: usize) {
        let ngp = cp / 16;
        self.wq.clear();
        self.wq.resize(nr_pad * cp, 0);
        for v in [&mut self.ws, &mut self.wm] {
            v.clear();
            v.resize(nr_pad * ngp, 0.0);
        }
        self.wb.clear();
        self.wb.resize(nr_pad * ngp, 0);
        self.nq.resize(cols, 0);
        self.ns.resize(cols / 16, 0.0);
        self.nm.resize(cols / 16, 0.0);
    }
}

thread_local! {
    /// The packed activations of the caller's last GEMM (their buffers are reused).
    pub(crate) static ACTS: RefCell<PackedActs> = RefCell::new(PackedActs::default());
    /// One task's packed rows, per worker.
    pub(crate) static ROWS: RefCell<PackedRows> = RefCell::new(PackedRows::default());
}

/// Byte offset, within a row, of unit `k` (columns 4k..4k+3) of group `g`.
#[inline]
pub(crate) fn unit_at(g: usize, k: usize) -> usize {
    256 * (g / 16) + 64 * k + 4 * (g % 16)
}

/// Quantize `x: [n, cols]` as `gemm::quantize_acts_ref` does, into packed order.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn quantize(x: &[f32], n: usize, cols: usize, kind: ActKind, out: &mut PackedActs) {
    let np = n.div_ceil(T) * T;
    let cp = cols.div_ceil(256) * 256;
    let ngp = cp / 16;
    out.n = np;
    out.cp = cp;
    out.xu.clear();
    out.xu.resize(np * cp, 0x80);
    out.d16.clear();
    out.d16.resize(np * ngp, 0.0);
    out.xs.clear();
    out.xs.resize(np * ngp, 0.0);
    let xu = out.xu.as_mut_ptr();
    for_each_group(x, n, cols, kind, |t, g, bytes, d, xs| {
        let mut units = [0u32; 4];
        _mm_storeu_si128(units.as_mut_ptr() as *mut __m128i, _mm_xor_si128(bytes, _mm_set1_epi8(-128)));
        for (k, u) in units.iter().enumerate() {
            // SAFETY: unit_at(g, k) < cp and t < np: inside the row of token t.
            unsafe { (xu.add(t * cp + unit_at(g, k)) as *mut u32).write_unaligned(*u) };
        }
        out.d16[t * ngp + g] = d;
        out.xs[t * ngp + g] = xs;
    });
}

/// Pack one natural-order row (`p.nq`, `p.ns`, `p.nm`, `cols` columns) into row `i` of `p`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pack_row(p: &mut PackedRows, i: usize, cols: usize, cp: usize, offset: u8) {
    let ngp = cp / 16;
    let dst = p.wq.as_mut_ptr().add(i * cp);
    // Unit (group g', k) of a 64-column chunk sits at lane 4g' + k; gather
    // the lanes of each k together.
    let idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    let ov = _mm512_set1_epi8(offset as i8);
    for c in 0..cols / 64 {
        let q = _mm512_loadu_si512(p.nq.as_ptr().add(64 * c) as *const _);
        let byk = _mm512_permutexvar_epi32(idx, _mm512_sub_epi8(q, ov));
        let base = 256 * (c / 4) + 16 * (c % 4);
        _mm_storeu_si128(dst.add(base) as *mut __m128i, _mm512_castsi512_si128(byk));
        _mm_storeu_si128(dst.add(base + 64) as *mut __m128i, _mm512_extracti32x4_epi32::<1>(byk));
        _mm_storeu_si128(dst.add(base + 128) as *mut __m128i, _mm512_extracti32x4_epi32::<2>(byk));
        _mm_storeu_si128(dst.add(base + 192) as *mut __m128i, _mm512_extracti32x4_epi32::<3>(byk));
        // Σq of each group of 16: pairs of 8-byte sums.
        let mut s8 = [0u64; 8];
        _mm512_storeu_si512(s8.as_mut_ptr() as *mut _, _mm512_sad_epu8(q, _mm512_setzero_si512()));
        for g in 0..4 {
            let sum = (s8[2 * g] + s8[2 * g + 1]) as i32 - 16 * offset as i32;
            p.wb[i * ngp + 4 * c + g] = -128 * sum;
        }
    }
    let ng = cols / 16;
    p.ws[i * ngp..i * ngp + ng].copy_from_slice(&p.ns[..ng]);
    p.wm[i * ngp..i * ngp + ng].copy_from_slice(&p.nm[..ng]);
}

/// Tile of rows `i0..i0+R` and tokens `t0..t0+T`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // rows and tokens index the tile together
unsafe fn tile(p: &PackedRows, i0: usize, a: &PackedActs, t0: usize, has_min: bool) -> [[f32; T]; R] {
    let (cp, ngp) = (a.cp, a.cp / 16);
    let wq = p.wq.as_ptr().add(i0 * cp);
    let xu = a.xu.as_ptr().add(t0 * cp);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    for s in 0..cp / 256 {
        let mut idp = [[_mm512_setzero_si512(); T]; R];
        for r in 0..R {
            let b = _mm512_loadu_si512(p.wb.as_ptr().add((i0 + r) * ngp + 16 * s) as *const _);
            for t in 0..T {
                idp[r][t] = b;
            }
        }
        for k in 0..4 {
            let mut x = [_mm512_setzero_si512(); T];
            for t in 0..T {
                x[t] = _mm512_loadu_si512(xu.add(t * cp + 256 * s + 64 * k) as *const _);
            }
            for r in 0..R {
                let w = _mm512_loadu_si512(wq.add(r * cp + 256 * s + 64 * k) as *const _);
                for t in 0..T {
                    idp[r][t] = _mm512_dpbusd_epi32(idp[r][t], x[t], w);
                }
            }
        }
        let mut sx = [_mm512_setzero_ps(); T];
        for t in 0..T {
            sx[t] = _mm512_loadu_ps(a.d16.as_ptr().add((t0 + t) * ngp + 16 * s));
        }
        for r in 0..R {
            let sw = _mm512_loadu_ps(p.ws.as_ptr().add((i0 + r) * ngp + 16 * s));
            for t in 0..T {
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idp[r][t]), _mm512_mul_ps(sw, sx[t]), acc[r][t]);
            }
        }
    }
    if has_min {
        for s in 0..cp / 256 {
            for r in 0..R {
                let m = _mm512_loadu_ps(p.wm.as_ptr().add((i0 + r) * ngp + 16 * s));
                for t in 0..T {
                    let xs = _mm512_loadu_ps(a.xs.as_ptr().add((t0 + t) * ngp + 16 * s));
                    acc[r][t] = _mm512_fnmadd_ps(m, xs, acc[r][t]);
                }
            }
        }
    }
    let sums = reduce8(std::mem::transmute::<[[__m512; T]; R], [__m512; 8]>(acc));
    std::mem::transmute::<[f32; 8], [[f32; T]; R]>(sums)
}

/// The lane sums of 8 vectors at once (a transposing tree: 24 shuffles and
/// adds instead of 8 separate horizontal reductions).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn reduce8(v: [__m512; 8]) -> [f32; 8] {
    // Halve each pair: 8 lanes of x's partial sums, then 8 of y's.
    let pair = |x: __m512, y: __m512| _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(x, y), _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y));
    let (a, b, c, d) = (pair(v[0], v[1]), pair(v[2], v[3]), pair(v[4], v[5]), pair(v[6], v[7]));
    // Quarter j now holds 4 partial sums of vector j (j = 0..3, then 4..7).
    let quad = |x: __m512, y: __m512| _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(x, y), _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y));
    let (lo, hi) = (quad(a, b), quad(c, d));
    // Within each quarter: [p0..p3] of vector j and [q0..q3] of vector j+4.
    let s = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(lo, hi), _mm512_shuffle_ps::<0xDD>(lo, hi));
    let r = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(s, s), _mm512_shuffle_ps::<0xDD>(s, s));
    let mut l = [0f32; 16];
    _mm512_storeu_ps(l.as_mut_ptr(), r);
    [l[0], l[4], l[8], l[12], l[1], l[5], l[9], l[13]]
}

/// `y = x · wᵀ` for raw weight rows `data` (`rows` of `rb` bytes, `cols`
/// columns of `dtype`, level form `form`, activations `kind`).
/// # Safety
/// AVX-512 F/BW/VNNI available; `cols` a multiple of 64 (of 256 for Q8_K
/// activations); `x: [n, cols]`, `y: [n, rows]`, `data` holds `rows · rb` bytes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(x: &[f32], n: usize, dtype: DType, form: LevelForm, kind: ActKind, data: &[u8], rows: usize, cols: usize, y: &mut [f32]) {
    let rb = dtype.bytes_for(cols);
    let mut acts = PackedActs::default();
    quantize(x, n, cols, kind, &mut acts);
    let cp = acts.cp;
    let out = OutPtr(y.as_mut_ptr());
    let simd_fill = crate::vnni::supports(dtype);
    crate::pool::parallel_for(rows.div_ceil(ROWS_PER_TASK), &|task| {
        ROWS.with(|p| {
            let p = &mut *p.borrow_mut();
            let r0 = task * ROWS_PER_TASK;
            let nr = ROWS_PER_TASK.min(rows - r0);
            let nr_pad = nr.div_ceil(R) * R;
            p.prepare(nr_pad, cols, cp);
            for i in 0..nr {
                let row = &data[(r0 + i) * rb..(r0 + i + 1) * rb];
                // SAFETY (both): AVX-512 VNNI available (caller); buffers sized above.
                if simd_fill {
                    unsafe { crate::vnni::fill_row(dtype, row, &mut p.nq, &mut p.ns, &mut p.nm) };
                } else {
                    unpack_levels(dtype, row, &mut p.nq, &mut p.ns, &mut p.nm);
                }
                unsafe { pack_row(p, i, cols, cp, form.offset) };
            }
            // SAFETY: out is y and this task alone writes rows r0..r0 + nr; the
            // tiles stay within the padded rows and tokens that p and the acts hold.
            unsafe { crate::gemm::run_tiles(out, rows, r0, nr, n, |i0, t0| tile(p, i0, &acts, t0, form.has_min)) };
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce8_sums_each_vector() {
        if !crate::gemm::has_avx512_vnni() {
            return;
        }
        let vals: Vec<[f32; 16]> = (0..8).map(|i| std::array::from_fn(|l| (i * 16 + l) as f32 * 0.5 + (l % 3) as f32)).collect();
        let got = unsafe { reduce8(std::array::from_fn(|i| _mm512_loadu_ps(vals[i].as_ptr()))) };
        for i in 0..8 {
            assert_eq!(got[i], vals[i].iter().sum::<f32>(), "vector {i}");
        }
    }
}
