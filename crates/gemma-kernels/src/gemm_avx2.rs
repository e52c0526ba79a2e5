//! The AVX2 prefill GEMM (the fast path of `gemm::gemm_quant` on CPUs
//! without AVX-512 VNNI), over the packed layout of `gemm_packed`.
//!
//! In each super-chunk of 256 columns (16 groups of 16), 64-byte chunk `k`
//! holds columns `4k..4k+3` of every group; its low 32 bytes are groups
//! 0..7 and its high 32 bytes groups 8..15. `vpmaddubsw` multiplies the
//! unsigned activations (`x + 128`) with the signed weights (`q − offset`)
//! into pairs of i16, two chunks' pairs are added in i16 and `vpmaddwd`
//! with ones widens them to i32: 32-bit lane `g` always accumulates group
//! `g` (no horizontal step until the very end). Each lane starts at
//! `−128 · Σ(q − offset)` of its group, which removes the `+128`.
//!
//! The i16 sums bound the weights: two chunks add four products
//! `255 · |q − offset|`, which stays within i16 for `|q − offset| ≤ 32`
//! — every level-form type but Q8_0 ([`fits`]). Q8_0 takes the signed
//! form: `|w|` times the activation carrying `w`'s sign (`vpsignb`), one
//! chunk at a time, with lane starts of zero.

#![cfg(target_arch = "x86_64")]

use crate::gemm::OutPtr;
use crate::gemm_packed::{unit_at, PackedActs, PackedRows, ROWS};
use gemma_core::DType;
use gemma_quant::act::ActKind;
use gemma_quant::levels::{unpack_levels, LevelForm};
use std::arch::x86_64::*;

/// Rows per tile.
const R: usize = 2;
/// Tokens per tile.
const T: usize = 2;
/// Rows of W packed and handled by one task.
const ROWS_PER_TASK: usize = 16;

/// Whether the i16 partial sums of this kernel hold every product of the
/// type: `|q − offset| ≤ 32` for all levels (every level form but Q8_0's).
pub(crate) fn fits(form: LevelForm) -> bool {
    form.offset <= 32 && form.max_level - form.offset <= 32
}

/// Horizontal maximum of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

/// Horizontal minimum of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmin(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

/// `(multiplier, scale)` of the block of `block` values at `x`, exactly as
/// `gemm::quantize_acts_ref` (ggml's activation quantization).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_scale(x: *const f32, block: usize, kind: ActKind) -> (f32, f32) {
    let (mut mx, mut mn) = (_mm256_set1_ps(f32::NEG_INFINITY), _mm256_set1_ps(f32::INFINITY));
    for i in (0..block).step_by(8) {
        let v = _mm256_loadu_ps(x.add(i));
        mx = _mm256_max_ps(mx, v);
        mn = _mm256_min_ps(mn, v);
    }
    crate::gemm::scale_from_extremes(hmax(mx), hmin(mn), kind)
}

/// Quantize token row `x` (`cols` values) into row `t` of the prepared
/// `out`, in packed order (as `gemm::quantize_acts_ref`, plus 128).
/// # Safety
/// AVX2/FMA available; `out` holds row `t` (`cp` bytes, `cp/16` scales).
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_token(x: &[f32], kind: ActKind, t: usize, cp: usize, xu: *mut u8, d16: *mut f32, xs: *mut f32) {
    let block = if kind == ActKind::Q8K { 256 } else { 32 };
    let (xp, ngp) = (x.as_ptr(), cp / 16);
    let row = xu.add(t * cp);
    let max = _mm256_set1_epi32(127);
    for b in 0..x.len() / block {
        let at = b * block;
        let (mul, d) = block_scale(xp.add(at), block, kind);
        let m = _mm256_set1_ps(mul);
        for i in (0..block).step_by(16) {
            let q0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xp.add(at + i)), m)), max);
            let q1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xp.add(at + i + 8)), m)), max);
            // i16 lanes [q0 0..4, q1 0..4 | q0 4..8, q1 4..8] → natural order.
            let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q0, q1));
            let bytes = _mm_xor_si128(_mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w)), _mm_set1_epi8(-128));
            let s = _mm256_add_epi32(q0, q1);
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)));
            let g = (at + i) / 16;
            for k in 0..4 {
                let unit = match k {
                    0 => _mm_cvtsi128_si32(bytes),
                    1 => _mm_extract_epi32::<1>(bytes),
                    2 => _mm_extract_epi32::<2>(bytes),
                    _ => _mm_extract_epi32::<3>(bytes),
                };
                (row.add(unit_at(g, k)) as *mut i32).write_unaligned(unit);
            }
            *d16.add(t * ngp + g) = d;
            *xs.add(t * ngp + g) = d * s as f32;
        }
    }
}

/// Pack one natural-order row (`p.nq`, `p.ns`, `p.nm`, `cols` columns, a
/// multiple of 64) into row `i` of `p`: four groups at a time, a 4×4
/// transpose of their 4-column units. `signed`: lane starts of zero (the
/// signed product needs no `+128` correction).
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_row(p: &mut PackedRows, i: usize, cols: usize, cp: usize, offset: u8, signed: bool) {
    let ngp = cp / 16;
    let dst = p.wq.as_mut_ptr().add(i * cp);
    let ov = _mm_set1_epi8(offset as i8);
    let zero = _mm_setzero_si128();
    for g0 in (0..cols / 16).step_by(4) {
        let mut v = [zero; 4];
        for (j, v) in v.iter_mut().enumerate() {
            let q = _mm_loadu_si128(p.nq.as_ptr().add(16 * (g0 + j)) as *const __m128i);
            let sad = _mm_sad_epu8(q, zero);
            let sum = (_mm_cvtsi128_si32(sad) + _mm_extract_epi32::<2>(sad)) - 16 * offset as i32;
            p.wb[i * ngp + g0 + j] = if signed { 0 } else { -128 * sum };
            *v = _mm_sub_epi8(q, ov);
        }
        // Rows: groups g0..g0+4; columns: units k = 0..4 → rows: units, columns: groups.
        let (a, b) = (_mm_unpacklo_epi32(v[0], v[1]), _mm_unpacklo_epi32(v[2], v[3]));
        let (c, d) = (_mm_unpackhi_epi32(v[0], v[1]), _mm_unpackhi_epi32(v[2], v[3]));
        let by_k = [_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b), _mm_unpacklo_epi64(c, d), _mm_unpackhi_epi64(c, d)];
        for (k, u) in by_k.iter().enumerate() {
            _mm_storeu_si128(dst.add(unit_at(g0, k)) as *mut __m128i, *u);
        }
    }
    let ng = cols / 16;
    p.ws[i * ngp..i * ngp + ng].copy_from_slice(&p.ns[..ng]);
    p.wm[i * ngp..i * ngp + ng].copy_from_slice(&p.nm[..ng]);
}

/// f16 at byte `i` of `b`, as f32.
#[inline]
fn f16_le(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Unpack one row into natural-order levels, scales and mins as
/// `gemma_quant::levels::unpack_levels` does, with vector nibble
/// extraction for Q4_K, Q6_K, Q5_0 and Q8_0 (most matrices of Q4_K_M and
/// Q8_0 files); other types take the scalar unpack.
/// # Safety
/// AVX2 available; `row` holds `q.len()` columns of `dtype`; `s` and `m`
/// hold `q.len() / 16` values.
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_row(dtype: DType, row: &[u8], q: &mut [u8], s: &mut [f32], m: &mut [f32]) {
    let cols = q.len();
    let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
    let m4 = _mm256_set1_epi8(0xF);
    let qp = q.as_mut_ptr();
    match dtype {
        DType::Q4_K => {
            for b in 0..cols / bs {
                let blk = &row[b * bb..(b + 1) * bb];
                let (d, dmin) = (f16_le(blk, 0), f16_le(blk, 2));
                let sc = &blk[4..16];
                for j in 0..8 {
                    let (sj, mj) = gemma_quant::act::scale_min_k4(j, sc);
                    let g = 16 * b + 2 * j;
                    s[g..g + 2].fill(d * sj as f32);
                    m[g..g + 2].fill(dmin * mj as f32);
                }
                for c in 0..4 {
                    let v = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * c) as *const __m256i);
                    let o = qp.add(256 * b + 64 * c);
                    _mm256_storeu_si256(o as *mut __m256i, _mm256_and_si256(v, m4));
                    _mm256_storeu_si256(o.add(32) as *mut __m256i, _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4));
                }
            }
        }
        DType::Q6_K => {
            let m2 = _mm256_set1_epi8(0x30);
            for b in 0..cols / bs {
                let blk = &row[b * bb..(b + 1) * bb];
                let d = f16_le(blk, 208);
                for (g, sc) in blk[192..208].iter().enumerate() {
                    s[16 * b + g] = d * (*sc as i8) as f32;
                }
                m[16 * b..16 * b + 16].fill(0.0);
                for n in 0..2 {
                    let a = _mm256_loadu_si256(blk.as_ptr().add(64 * n) as *const __m256i);
                    let bq = _mm256_loadu_si256(blk.as_ptr().add(64 * n + 32) as *const __m256i);
                    let h = _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * n) as *const __m256i);
                    let o = qp.add(256 * b + 128 * n);
                    // Bits 2i..2i+2 of h go to bits 4..6 of level i (shifts
                    // within 16-bit lanes; the mask drops bits from the neighbour byte).
                    let h0 = _mm256_and_si256(_mm256_slli_epi16::<4>(h), m2);
                    let h1 = _mm256_and_si256(_mm256_slli_epi16::<2>(h), m2);
                    let h2 = _mm256_and_si256(h, m2);
                    let h3 = _mm256_and_si256(_mm256_srli_epi16::<2>(h), m2);
                    _mm256_storeu_si256(o as *mut __m256i, _mm256_or_si256(_mm256_and_si256(a, m4), h0));
                    _mm256_storeu_si256(o.add(32) as *mut __m256i, _mm256_or_si256(_mm256_and_si256(bq, m4), h1));
                    _mm256_storeu_si256(o.add(64) as *mut __m256i, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(a), m4), h2));
                    _mm256_storeu_si256(o.add(96) as *mut __m256i, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bq), m4), h3));
                }
            }
        }
        DType::Q5_0 => {
            // Bit j of qh lands in byte j: byte j picks byte j / 8 of the
            // broadcast word, then tests bit j % 8.
            let spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
            let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            let m16 = _mm256_set1_epi8(0x10);
            for b in 0..cols / bs {
                let blk = &row[b * bb..(b + 1) * bb];
                s[2 * b..2 * b + 2].fill(f16_le(blk, 0));
                m[2 * b..2 * b + 2].fill(0.0);
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let hv = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), spread);
                let hb = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hv, bits), bits), m16);
                let lo = _mm_loadu_si128(blk.as_ptr().add(6) as *const __m128i);
                let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(lo), lo), m4);
                _mm256_storeu_si256(qp.add(32 * b) as *mut __m256i, _mm256_or_si256(nib, hb));
            }
        }
        DType::Q8_0 => {
            let flip = _mm256_set1_epi8(-128);
            for b in 0..cols / bs {
                let blk = &row[b * bb..(b + 1) * bb];
                s[2 * b..2 * b + 2].fill(f16_le(blk, 0));
                m[2 * b..2 * b + 2].fill(0.0);
                let v = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
                _mm256_storeu_si256(qp.add(32 * b) as *mut __m256i, _mm256_xor_si256(v, flip));
            }
        }
        _ => unpack_levels(dtype, row, q, s, m),
    }
}

/// The sum of the 8 lanes of each of `v`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsums<const N: usize>(v: [__m256; N]) -> [f32; N] {
    v.map(|v| {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    })
}

/// Tile of rows `i0..i0+R` and tokens `t0..t0+T`. `SIGNED`: the weights
/// do not [`fits`] the unsigned form (Q8_0) and the rows were packed with
/// zero lane starts.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // rows and tokens index the tile together
unsafe fn tile<const SIGNED: bool>(p: &PackedRows, i0: usize, a: &PackedActs, t0: usize, has_min: bool) -> [[f32; T]; R] {
    let (cp, ngp) = (a.cp, a.cp / 16);
    let wq = p.wq.as_ptr().add(i0 * cp);
    let xu = a.xu.as_ptr().add(t0 * cp);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for s in 0..cp / 256 {
        for h in 0..2 {
            // Groups 8h..8h+8 of super-chunk s.
            let at = 16 * s + 8 * h;
            let mut idp = [[_mm256_setzero_si256(); T]; R];
            for r in 0..R {
                let b = _mm256_loadu_si256(p.wb.as_ptr().add((i0 + r) * ngp + at) as *const __m256i);
                for t in 0..T {
                    idp[r][t] = b;
                }
            }
            if SIGNED {
                // Q8_0: |q − offset| up to 128 overflows the unsigned form;
                // multiply |w| by x carrying w's sign (both at most 128 · 127 · 2 in i16).
                let flip = _mm256_set1_epi8(-128);
                for k in 0..4 {
                    let off = 256 * s + 64 * k + 32 * h;
                    let mut x = [_mm256_setzero_si256(); T];
                    for t in 0..T {
                        x[t] = _mm256_xor_si256(_mm256_loadu_si256(xu.add(t * cp + off) as *const __m256i), flip);
                    }
                    for r in 0..R {
                        let w = _mm256_loadu_si256(wq.add(r * cp + off) as *const __m256i);
                        let aw = _mm256_abs_epi8(w);
                        for t in 0..T {
                            let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x[t], w));
                            idp[r][t] = _mm256_add_epi32(idp[r][t], _mm256_madd_epi16(p, ones));
                        }
                    }
                }
            } else {
                for k in (0..4).step_by(2) {
                    let off = 256 * s + 64 * k + 32 * h;
                    let mut x0 = [_mm256_setzero_si256(); T];
                    let mut x1 = [_mm256_setzero_si256(); T];
                    for t in 0..T {
                        x0[t] = _mm256_loadu_si256(xu.add(t * cp + off) as *const __m256i);
                        x1[t] = _mm256_loadu_si256(xu.add(t * cp + off + 64) as *const __m256i);
                    }
                    for r in 0..R {
                        let w0 = _mm256_loadu_si256(wq.add(r * cp + off) as *const __m256i);
                        let w1 = _mm256_loadu_si256(wq.add(r * cp + off + 64) as *const __m256i);
                        for t in 0..T {
                            let pair = _mm256_add_epi16(_mm256_maddubs_epi16(x0[t], w0), _mm256_maddubs_epi16(x1[t], w1));
                            idp[r][t] = _mm256_add_epi32(idp[r][t], _mm256_madd_epi16(pair, ones));
                        }
                    }
                }
            }
            let mut sx = [_mm256_setzero_ps(); T];
            for t in 0..T {
                sx[t] = _mm256_loadu_ps(a.d16.as_ptr().add((t0 + t) * ngp + at));
            }
            for r in 0..R {
                let sw = _mm256_loadu_ps(p.ws.as_ptr().add((i0 + r) * ngp + at));
                for t in 0..T {
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idp[r][t]), _mm256_mul_ps(sw, sx[t]), acc[r][t]);
                }
            }
        }
    }
    if has_min {
        // acc −= Σ_g m[r, g] · xs[t, g], in two independent chains per
        // output (in the main loop, the extra FMA doubled the latency of
        // each accumulator's chain, which bounded the whole tile).
        let mut mins = [[[_mm256_setzero_ps(); T]; R]; 2];
        for g0 in (0..ngp).step_by(16) {
            for (c, mins) in mins.iter_mut().enumerate() {
                let g = g0 + 8 * c;
                for r in 0..R {
                    let m = _mm256_loadu_ps(p.wm.as_ptr().add((i0 + r) * ngp + g));
                    for t in 0..T {
                        let xs = _mm256_loadu_ps(a.xs.as_ptr().add((t0 + t) * ngp + g));
                        mins[r][t] = _mm256_fmadd_ps(m, xs, mins[r][t]);
                    }
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                acc[r][t] = _mm256_sub_ps(acc[r][t], _mm256_add_ps(mins[0][r][t], mins[1][r][t]));
            }
        }
    }
    let sums = hsums(std::mem::transmute::<[[__m256; T]; R], [__m256; R * T]>(acc));
    std::mem::transmute::<[f32; R * T], [[f32; T]; R]>(sums)
}

/// `y = x · wᵀ` for raw weight rows `data` (`rows` of `rb` bytes, `cols`
/// columns of `dtype`, level form `form`, activations `kind`).
/// # Safety
/// AVX2/FMA available; `cols` a multiple of 64 (of 256 for
/// Q8_K activations); `x: [n, cols]`, `y: [n, rows]`, `data` holds
/// `rows · rb` bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(x: &[f32], n: usize, dtype: DType, form: LevelForm, kind: ActKind, data: &[u8], rows: usize, cols: usize, y: &mut [f32]) {
    let rb = dtype.bytes_for(cols);
    let mut acts = crate::gemm_packed::ACTS.with(|a| std::mem::take(&mut *a.borrow_mut()));
    let np = n.div_ceil(T) * T;
    let cp = cols.div_ceil(256) * 256;
    acts.n = np;
    acts.cp = cp;
    acts.xu.clear();
    acts.xu.resize(np * cp, 0x80);
    for v in [&mut acts.d16, &mut acts.xs] {
        v.clear();
        v.resize(np * cp / 16, 0.0);
    }
    // The tokens' quantization in parallel (disjoint rows of each buffer).
    let (xu, d16, xs) = (SendPtr(acts.xu.as_mut_ptr()), SendPtr(acts.d16.as_mut_ptr()), SendPtr(acts.xs.as_mut_ptr()));
    crate::pool::parallel_for(n, &|t| {
        // SAFETY: AVX2 available (caller); token t's rows are written by this task alone.
        unsafe { quantize_token(&x[t * cols..(t + 1) * cols], kind, t, cp, xu.get(), d16.get(), xs.get()) };
    });
    let out = OutPtr(y.as_mut_ptr());
    let acts_ref = &acts;
    let signed = !fits(form);
    crate::pool::parallel_for(rows.div_ceil(ROWS_PER_TASK), &|task| {
        ROWS.with(|p| {
            let p = &mut *p.borrow_mut();
            let r0 = task * ROWS_PER_TASK;
            let nr = ROWS_PER_TASK.min(rows - r0);
            let nr_pad = nr.div_ceil(R) * R;
            p.prepare(nr_pad, cols, cp);
            for i in 0..nr {
                let row = &data[(r0 + i) * rb..(r0 + i + 1) * rb];
                // SAFETY (both): AVX2 available (caller); buffers sized by prepare.
                unsafe { fill_row(dtype, row, &mut p.nq, &mut p.ns, &mut p.nm) };
                unsafe { pack_row(p, i, cols, cp, form.offset, signed) };
            }
            // SAFETY: out is y and this task alone writes rows r0..r0 + nr; the
            // tiles stay within the padded rows and tokens that p and the acts hold.
            unsafe {
                crate::gemm::run_tiles(out, rows, r0, nr, n, |i0, t0| match signed {
                    false => tile::<false>(p, i0, acts_ref, t0, form.has_min),
                    true => tile::<true>(p, i0, acts_ref, t0, form.has_min),
                })
            };
        });
    });
    crate::gemm_packed::ACTS.with(|a| *a.borrow_mut() = acts);
}

/// A buffer pointer shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SendPtr<P>(*mut P);
// SAFETY: every task writes only its own token's part.
unsafe impl<P> Send for SendPtr<P> {}
unsafe impl<P> Sync for SendPtr<P> {}

impl<P> SendPtr<P> {
    /// The pointer (a method, so closures capture the Sync wrapper).
    fn get(&self) -> *mut P {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::tensor::ALL_DTYPES;
    use gemma_quant::levels::level_form;

    /// The vector unpack equals the scalar one for every level-form type.
    #[test]
    fn fill_row_equals_unpack_levels() {
        if crate::dot::simd_level() != crate::dot::SimdLevel::Avx2 {
            eprintln!("no AVX2 on this CPU: nothing to test");
            return;
        }
        for dt in ALL_DTYPES.into_iter().filter(|&d| level_form(d).is_some()) {
            let cols = 512;
            let wv: Vec<f32> = (0..cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.45) * 0.2).collect();
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            let (mut q, mut s, mut m) = (vec![0u8; cols], vec![0f32; cols / 16], vec![0f32; cols / 16]);
            unpack_levels(dt, &raw, &mut q, &mut s, &mut m);
            let (mut q2, mut s2, mut m2) = (vec![7u8; cols], vec![7f32; cols / 16], vec![7f32; cols / 16]);
            // SAFETY: AVX2 checked above; buffers sized for cols columns.
            unsafe { fill_row(dt, &raw, &mut q2, &mut s2, &mut m2) };
            assert_eq!((q, s, m), (q2, s2, m2), "{dt}");
        }
    }
}
