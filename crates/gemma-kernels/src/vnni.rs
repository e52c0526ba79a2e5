//! AVX-512 VNNI building blocks for quantized weights in level form
//! (`w = s·(q − offset) − m` per 16 columns, see `gemma_quant::levels`):
//! each supported type unpacks 64 columns at a time in registers
//! ([`Chunks`]), which serves both the decode kernel (`gemv_packed.rs`) and
//! the unpacking of weight rows for the prefill GEMM ([`fill_row`]).
//! Everything here requires AVX-512 F/BW/VNNI; callers check
//! `gemm::has_avx512_vnni()` first. Tested against the scalar reference of
//! `gemma_quant::levels`.

#![cfg(target_arch = "x86_64")]

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
    // vmovd, not `_mm_cvtsi32_si128`, which LLVM turns into a `vpinsrw` with a false dependency (see qdot.rs: f16_at).
    let bits = u16::from_le_bytes([*p, *p.add(1)]) as u32;
    let v: __m128i;
    // SAFETY: vmovd from a general register into an xmm register; no memory, no flags.
    std::arch::asm!("vmovd {v}, {b:e}", v = out(xmm_reg) v, b = in(reg) bits, options(pure, nomem, nostack, preserves_flags));
    _mm_cvtss_f32(_mm_cvtph_ps(v))
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

/// Whether [`Chunks`] (so [`fill_row`] and the decode kernel) handle `dtype`.
pub fn supports(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q5_0 | DType::Q4_K | DType::Q6_K)
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
    use crate::gemm::{has_avx512_vnni, quantize_acts_ref, QuantActs};
    use gemma_core::{Matrix, Storage};
    use gemma_quant::act::act_kind;
    use gemma_quant::levels::{level_form, unpack_levels};

    #[test]
    fn fill_and_gemv_equal_the_scalar_references() {
        if !has_avx512_vnni() {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to test");
            return;
        }
        // 640 columns: whole 256-column super-chunks plus a tail.
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
                // The decode kernel over this row (one token).
                let w1 = Matrix::new(1, cols, Storage::Raw { dtype: dt, len: cols, bytes: gemma_core::tensor::Bytes::Owned(row.to_vec()) });
                let mut y = [0f32];
                assert!(crate::gemv_packed::matmul(&x, 1, &w1, &mut y));
                let got = y[0] as f64;
                assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{dt} row {r}: {got} vs {want}");
            }
        }
    }
}
