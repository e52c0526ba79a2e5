//! AVX-512 VNNI building blocks for quantized weights in level form
//! (`w = s·(q − offset) − m` per 16 columns, see `gemma_quant::levels`):
//! each supported type unpacks 64 columns at a time in registers
//! ([`Chunks`]), which serves both the matrix-vector product of decoding
//! ([`gemv_row`]) and the unpacking of weight rows for the prefill GEMM
//! ([`fill_row`]). Everything here requires AVX-512 F/BW/VNNI; callers check
//! `gemm::has_avx512_vnni()` first. Tested against the scalar references in
//! `gemm.rs` tests and `gemma_quant::levels`.

#![cfg(target_arch = "x86_64")]

use crate::gemm::QuantActs;
use gemma_core::DType;
use std::arch::x86_64::*;

/// 64 columns of a weight row: levels, the 4 group scales, the 4 group mins.
pub(crate) type Chunk = (__m512i, __m128, __m128);

/// A weight type unpacked 64 columns at a time.
pub(crate) trait Chunks {
    /// Whether the type has mins.
    const MINS: bool;
    /// Unpack columns `64c..64c+64` of `row`.
    unsafe fn chunk(row: *const u8, c: usize) -> Chunk;
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn h(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([*p, *p.add(1)]) as i32)))
}

/// Four lanes: `a, a, b, b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn pairs(a: f32, b: f32) -> __m128 {
    _mm_set_ps(b, b, a, a)
}

pub(crate) struct Q8_0;
impl Chunks for Q8_0 {
    const MINS: bool = false;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    unsafe fn chunk(row: *const u8, c: usize) -> Chunk {
        let (b0, b1) = (row.add(68 * c), row.add(68 * c + 34));
        let lo = _mm256_loadu_si256(b0.add(2) as *const __m256i);
        let hi = _mm256_loadu_si256(b1.add(2) as *const __m256i);
        let w = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8(-128));
        (w, pairs(h(b0), h(b1)), _mm_setzero_ps())
    }
}

pub(crate) struct Q5_0;
impl Chunks for Q5_0 {
    const MINS: bool = false;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    unsafe fn chunk(row: *const u8, c: usize) -> Chunk {
        let (b0, b1) = (row.add(44 * c), row.add(44 * c + 22));
        let (a, b) = (_mm_loadu_si128(b0.add(6) as *const __m128i), _mm_loadu_si128(b1.add(6) as *const __m128i));
        let ab = _mm256_set_m128i(b, a);
        // [a, b, a>>4, b>>4] → [a, a>>4, b, b>>4]: bytes in element order.
        let z = _mm512_inserti64x4(_mm512_castsi256_si512(ab), _mm256_srli_epi16(ab, 4), 1);
        let nib = _mm512_and_si512(_mm512_shuffle_i64x2(z, z, 0b11_01_10_00), _mm512_set1_epi8(0xF));
        let qh0 = u32::from_le_bytes([*b0.add(2), *b0.add(3), *b0.add(4), *b0.add(5)]) as u64;
        let qh1 = u32::from_le_bytes([*b1.add(2), *b1.add(3), *b1.add(4), *b1.add(5)]) as u64;
        let hb = _mm512_maskz_mov_epi8(qh0 | (qh1 << 32), _mm512_set1_epi8(0x10));
        (_mm512_or_si512(nib, hb), pairs(h(b0), h(b1)), _mm_setzero_ps())
    }
}

pub(crate) struct Q4K;
impl Chunks for Q4K {
    const MINS: bool = true;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    unsafe fn chunk(row: *const u8, c: usize) -> Chunk {
        let blk = row.add(144 * (c / 4));
        let k = c % 4;
        let v = _mm256_loadu_si256(blk.add(16 + 32 * k) as *const __m256i);
        let z = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
        let w = _mm512_and_si512(z, _mm512_set1_epi8(0xF));
        let (d, dmin) = (h(blk), h(blk.add(2)));
        let sc = std::slice::from_raw_parts(blk.add(4), 12);
        let (s0, m0) = gemma_quant::act::scale_min_k4(2 * k, sc);
        let (s1, m1) = gemma_quant::act::scale_min_k4(2 * k + 1, sc);
        (w, pairs(d * s0 as f32, d * s1 as f32), pairs(dmin * m0 as f32, dmin * m1 as f32))
    }
}

pub(crate) struct Q6K;
impl Chunks for Q6K {
    const MINS: bool = false;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    unsafe fn chunk(row: *const u8, c: usize) -> Chunk {
        let blk = row.add(210 * (c / 4));
        let (n, k) = ((c % 4) / 2, c % 2);
        let ql = _mm512_loadu_si512(blk.add(64 * n) as *const _);
        let qh = _mm256_loadu_si256(blk.add(128 + 32 * n) as *const __m256i);
        let m4 = _mm512_set1_epi8(0xF);
        // Chunk k = 0: low nibbles, qh bits 0-1 then 2-3; k = 1: high nibbles, bits 4-5 then 6-7.
        let (lo_shift, hi_shift) = if k == 0 { (0, 2) } else { (4, 6) };
        let hs = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(lo_shift))),
            _mm256_srl_epi16(qh, _mm_cvtsi32_si128(hi_shift)),
            1,
        );
        let nib = _mm512_and_si512(_mm512_srl_epi16(ql, _mm_cvtsi32_si128(4 * k as i32)), m4);
        let hi = _mm512_slli_epi16(_mm512_and_si512(hs, _mm512_set1_epi8(3)), 4);
        let d = h(blk.add(208));
        let sc = _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(i32::from_le_bytes(*(blk.add(192 + 4 * (c % 4)) as *const [u8; 4])))));
        (_mm512_or_si512(nib, hi), _mm_mul_ps(sc, _mm_set1_ps(d)), _mm_setzero_ps())
    }
}

/// Whether [`gemv_row`] and [`fill_row`] handle `dtype`.
pub fn supports(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q5_0 | DType::Q4_K | DType::Q6_K)
}

/// One token's activations laid out per 64-column chunk for [`gemv_row`].
#[derive(Default)]
pub struct ActChunks {
    x: Vec<__m512i>,
    sx: Vec<__m512>,
    /// `−offset · Σ` of each lane's 4 levels (the accumulator's start).
    base: Vec<__m512i>,
    xs: Vec<__m128>,
}

/// Lane l of a 64-column chunk covers group l / 4.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn spread(v: __m128) -> __m512 {
    _mm512_permutexvar_ps(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0), _mm512_castps128_ps512(v))
}

/// Prepare token `t` of `a` for weights of `dtype`.
/// # Safety
/// AVX-512 F/BW/VNNI available; `t < a.n`; cols a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub unsafe fn act_chunks(a: &QuantActs, t: usize, dtype: DType) -> ActChunks {
    let mut out = ActChunks::default();
    act_chunks_into(a, t, dtype, &mut out);
    out
}

/// [`act_chunks`] into an existing value (reusing its buffers).
/// # Safety
/// As [`act_chunks`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub unsafe fn act_chunks_into(a: &QuantActs, t: usize, dtype: DType, out: &mut ActChunks) {
    let offset = gemma_quant::levels::level_form(dtype).map_or(0, |f| f.offset);
    let (cols, ng) = (a.cols, a.cols / 16);
    let ov = _mm512_set1_epi8(offset as i8);
    let zero = _mm512_setzero_si512();
    out.x.clear();
    out.sx.clear();
    out.base.clear();
    out.xs.clear();
    for c in 0..cols / 64 {
        let x = _mm512_loadu_si512(a.qs.as_ptr().add(t * cols + 64 * c) as *const _);
        out.x.push(x);
        out.sx.push(spread(_mm_loadu_ps(a.d16.as_ptr().add(t * ng + 4 * c))));
        out.base.push(if offset != 0 { _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, ov, x)) } else { zero });
        out.xs.push(_mm_loadu_ps(a.xs.as_ptr().add(t * ng + 4 * c)));
    }
}

/// Tokens handled per pass of the multi-token decode kernels.
pub const GEMV_TOKENS: usize = 8;

/// One row against up to [`GEMV_TOKENS`] tokens: each 64-column chunk is
/// unpacked once and used for every token. Each token's arithmetic (op by
/// op) is the same whatever the number of tokens, so results are bitwise
/// those of the token alone.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn gemv_k<K: Chunks>(row: *const u8, acts: &[&ActChunks], out: &mut [f32]) {
    let n = acts.len().min(GEMV_TOKENS);
    let mut acc = [_mm512_setzero_ps(); GEMV_TOKENS];
    let mut mins = [_mm_setzero_ps(); GEMV_TOKENS];
    for c in 0..acts[0].x.len() {
        let (w, s, m) = K::chunk(row, c);
        let sw = spread(s);
        for t in 0..n {
            let a = acts[t];
            let dp = _mm512_dpbusd_epi32(*a.base.get_unchecked(c), w, *a.x.get_unchecked(c));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), _mm512_mul_ps(sw, *a.sx.get_unchecked(c)), acc[t]);
            if K::MINS {
                mins[t] = _mm_fmadd_ps(m, *a.xs.get_unchecked(c), mins[t]);
            }
        }
    }
    for t in 0..n {
        let mut r = _mm512_reduce_add_ps(acc[t]);
        if K::MINS {
            let mut l = [0f32; 4];
            _mm_storeu_ps(l.as_mut_ptr(), mins[t]);
            r -= l.iter().sum::<f32>();
        }
        out[t] = r;
    }
}

/// Q8_0 rows, 4 chunks (8 blocks) at a time: the 8 block scales are
/// converted with one instruction instead of one per block. Multi-token as
/// [`gemv_k`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn gemv_q8_0(row: *const u8, acts: &[&ActChunks], out: &mut [f32]) {
    let nt = acts.len().min(GEMV_TOKENS);
    let mut acc = [_mm512_setzero_ps(); GEMV_TOKENS];
    let n = acts[0].x.len();
    let flip = _mm512_set1_epi8(-128);
    let mut c = 0;
    while c + 4 <= n {
        let b = row.add(68 * c);
        let d = |j: usize| u16::from_le_bytes([*b.add(34 * j), *b.add(34 * j + 1)]) as i16;
        let h = _mm_setr_epi16(d(0), d(1), d(2), d(3), d(4), d(5), d(6), d(7));
        let d8 = _mm512_castps256_ps512(_mm256_cvtph_ps(h));
        for k in 0..4 {
            let (lo, hi) = (2 * k as i32, 2 * k as i32 + 1);
            let idx = _mm512_set_epi32(hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo);
            let sw = _mm512_permutexvar_ps(idx, d8);
            let p0 = _mm256_loadu_si256(b.add(68 * k + 2) as *const __m256i);
            let p1 = _mm256_loadu_si256(b.add(68 * k + 36) as *const __m256i);
            let w = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(p0), p1, 1), flip);
            let ck = c + k;
            for t in 0..nt {
                let a = acts[t];
                let dp = _mm512_dpbusd_epi32(*a.base.get_unchecked(ck), w, *a.x.get_unchecked(ck));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), _mm512_mul_ps(sw, *a.sx.get_unchecked(ck)), acc[t]);
            }
        }
        c += 4;
    }
    for c in c..n {
        let (w, s, _) = Q8_0::chunk(row, c);
        let sw = spread(s);
        for t in 0..nt {
            let a = acts[t];
            let dp = _mm512_dpbusd_epi32(*a.base.get_unchecked(c), w, *a.x.get_unchecked(c));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), _mm512_mul_ps(sw, *a.sx.get_unchecked(c)), acc[t]);
        }
    }
    for t in 0..nt {
        out[t] = _mm512_reduce_add_ps(acc[t]);
    }
}

/// `out[t] = row · acts[t]` for up to [`GEMV_TOKENS`] tokens, for a row of
/// `dtype` blocks ([`supports`]) holding `64 · x.len()` columns; each
/// token's result is bitwise what it gets alone.
/// # Safety
/// AVX-512 F/BW/VNNI available; `row` holds that many columns; every act
/// has the same chunk count; `out.len() >= acts.len()`, `1 <= acts.len() <= GEMV_TOKENS`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub unsafe fn gemv_rows(dtype: DType, row: &[u8], acts: &[&ActChunks], out: &mut [f32]) {
    debug_assert!(!acts.is_empty() && acts.len() <= GEMV_TOKENS && out.len() >= acts.len());
    debug_assert!(row.len() >= dtype.bytes_for(64 * acts[0].x.len()));
    match dtype {
        DType::Q8_0 => gemv_q8_0(row.as_ptr(), acts, out),
        DType::Q5_0 => gemv_k::<Q5_0>(row.as_ptr(), acts, out),
        DType::Q4_K => gemv_k::<Q4K>(row.as_ptr(), acts, out),
        DType::Q6_K => gemv_k::<Q6K>(row.as_ptr(), acts, out),
        other => panic!("gemv_rows: {other} unsupported"),
    }
}

/// `row · a` (one token; see [`gemv_rows`]).
/// # Safety
/// As [`gemv_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub unsafe fn gemv_row(dtype: DType, row: &[u8], a: &ActChunks) -> f32 {
    let mut out = [0f32];
    gemv_rows(dtype, row, &[a], &mut out);
    out[0]
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn fill_k<K: Chunks>(row: *const u8, q: &mut [u8], s: &mut [f32], m: &mut [f32]) {
    for c in 0..q.len() / 64 {
        let (w, sv, mv) = K::chunk(row, c);
        _mm512_storeu_si512(q.as_mut_ptr().add(64 * c) as *mut _, w);
        _mm_storeu_ps(s.as_mut_ptr().add(4 * c), sv);
        _mm_storeu_ps(m.as_mut_ptr().add(4 * c), mv);
    }
}

/// Unpack a row of `dtype` blocks into levels `q: [cols]`, scales and mins
/// `[cols/16]`, exactly as `gemma_quant::levels::unpack_levels`.
/// # Safety
/// AVX-512 F/BW/VNNI available; `row` holds `q.len()` columns (a
/// multiple of 64); `s` and `m` hold `q.len() / 16` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub unsafe fn fill_row(dtype: DType, row: &[u8], q: &mut [u8], s: &mut [f32], m: &mut [f32]) {
    debug_assert!(row.len() >= dtype.bytes_for(q.len()) && s.len() == q.len() / 16 && m.len() == s.len());
    match dtype {
        DType::Q8_0 => fill_k::<Q8_0>(row.as_ptr(), q, s, m),
        DType::Q5_0 => fill_k::<Q5_0>(row.as_ptr(), q, s, m),
        DType::Q4_K => fill_k::<Q4K>(row.as_ptr(), q, s, m),
        DType::Q6_K => fill_k::<Q6K>(row.as_ptr(), q, s, m),
        other => panic!("fill_row: {other} unsupported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{has_avx512_vnni, quantize_acts_ref};
    use gemma_quant::act::act_kind;
    use gemma_quant::levels::{level_form, unpack_levels};

    #[test]
    fn fill_and_gemv_equal_the_scalar_references() {
        if !has_avx512_vnni() {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to test");
            return;
        }
        // 640 columns: groups of 4 chunks plus a tail (Q8_0's fast loop).
        let cases = [(DType::Q8_0, 512), (DType::Q8_0, 640), (DType::Q5_0, 640), (DType::Q4_K, 512), (DType::Q6_K, 512)];
        for (dt, cols) in cases {
            let rows = 5;
            let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.45) * 0.2).collect();
            let x: Vec<f32> = (0..cols).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * (1.0 + (i % 5) as f32)).collect();
            let form = level_form(dt).unwrap();
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            let mut a = QuantActs::default();
            quantize_acts_ref(&x, 1, cols, act_kind(dt).unwrap(), &mut a);
            let ac = unsafe { act_chunks(&a, 0, dt) };
            let rb = dt.bytes_for(cols);
            for r in 0..rows {
                let row = &raw[r * rb..(r + 1) * rb];
                let (mut q, mut s, mut m) = (vec![0u8; cols], vec![0f32; cols / 16], vec![0f32; cols / 16]);
                let (mut q2, mut s2, mut m2) = (q.clone(), s.clone(), m.clone());
                unpack_levels(dt, row, &mut q, &mut s, &mut m);
                unsafe { fill_row(dt, row, &mut q2, &mut s2, &mut m2) };
                assert_eq!((&q, &s, &m), (&q2, &s2, &m2), "{dt} row {r}");
                let mut want = 0f64;
                for c in 0..cols {
                    let w = s[c / 16] as f64 * (q[c] as f64 - form.offset as f64) - m[c / 16] as f64;
                    want += w * a.qs[c] as f64 * a.d16[c / 16] as f64;
                }
                let got = unsafe { gemv_row(dt, row, &ac) } as f64;
                assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{dt} row {r}: {got} vs {want}");
            }
        }
    }
}
