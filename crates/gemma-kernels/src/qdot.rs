//! Quantized weight rows · 8-bit activations: AVX2 paths for the weight
//! types of the common GGUF files (Q8_0, Q5_0, Q4_K, Q6_K), the scalar
//! integer references of gemma-quant for the rest, chosen at run time.

use crate::dot::{simd_level, SimdLevel};
use gemma_core::DType;
use gemma_quant::act::ActQ8;

/// `row · act` for a row of `w` blocks and its quantized activation row.
pub fn dot_q8(w: DType, row: &[u8], act: &ActQ8) -> f32 {
    // One row: the matrix kernel of `RowDot`, checked for this activation.
    RowDot::new(w, row.len() / w.block_bytes() * w.block_size(), std::slice::from_ref(act)).dot(row, act)
}

/// `row · act` for the rows of one weight matrix, with the kernel chosen and
/// the activation length checked once per matrix instead of per row (the
/// per-row dispatch, a 64-bit division among it, cost as much as the dot
/// of a 640-column row).
#[derive(Clone, Copy)]
pub struct RowDot {
    dtype: DType,
    #[cfg(target_arch = "x86_64")]
    simd: Option<unsafe fn(&[u8], &ActQ8) -> f32>,
}

impl RowDot {
    /// The kernel for rows of `w` blocks holding `cols` columns, for
    /// activations quantized from `cols` values (checked here for `acts`).
    pub fn new(w: DType, cols: usize, acts: &[ActQ8]) -> Self {
        for a in acts {
            // The SIMD paths read activation blocks without bounds checks.
            assert_eq!(a.qs.len(), cols, "activation row does not match the weight row");
        }
        #[cfg(target_arch = "x86_64")]
        {
            let simd: Option<unsafe fn(&[u8], &ActQ8) -> f32> = match (simd_level(), w) {
                (SimdLevel::Avx2, DType::Q8_0) => Some(avx2::dot_q8_0),
                (SimdLevel::Avx2, DType::Q5_0) => Some(avx2::dot_q5_0),
                (SimdLevel::Avx2, DType::Q4_K) => Some(avx2::dot_q4_k),
                (SimdLevel::Avx2, DType::Q6_K) => Some(avx2::dot_q6_k),
                _ => None,
            };
            Self { dtype: w, simd }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (simd_level, SimdLevel::Scalar);
            Self { dtype: w }
        }
    }

    /// `row · act`: `row` is one whole row of the matrix, `act` one of the
    /// activations [`RowDot::new`] checked (or quantized the same way).
    #[inline]
    pub fn dot(&self, row: &[u8], act: &ActQ8) -> f32 {
        debug_assert_eq!(act.qs.len(), row.len() / self.dtype.block_bytes() * self.dtype.block_size());
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = self.simd {
            // SAFETY: AVX2/FMA/F16C were detected (simd_level); the activation
            // length was checked against the matrix's columns in `new`.
            return unsafe { f(row, act) };
        }
        gemma_quant::act::dot_q8_ref(self.dtype, row, act)
    }
}

/// Tokens handled together by [`dot_q8_multi`] (each unpacked weight block
/// is shared by this many tokens; the K-quant kernels, whose unpacked
/// blocks fill the registers, take them four at a time).
pub const MULTI: usize = 8;

/// `out[t] = row · acts[t]` for up to [`MULTI`] tokens: each weight block is
/// unpacked once and multiplied with every token (prefill).
pub fn dot_q8_multi(w: DType, row: &[u8], acts: &[&ActQ8], out: &mut [f32]) {
    assert!(acts.len() <= MULTI && out.len() == acts.len());
    for a in acts {
        // The SIMD paths read activation blocks without bounds checks.
        assert_eq!(a.qs.len(), row.len() / w.block_bytes() * w.block_size(), "activation row does not match the weight row");
    }
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe {
            match w {
                DType::Q8_0 => return avx2::multi_q8_0(row, acts, out),
                DType::Q5_0 => return avx2::multi_q5_0(row, acts, out),
                DType::Q4_K => {
                    for (a, o) in acts.chunks(4).zip(out.chunks_mut(4)) {
                        avx2::multi_q4_k(row, a, o);
                    }
                    return;
                }
                DType::Q6_K => {
                    for (a, o) in acts.chunks(4).zip(out.chunks_mut(4)) {
                        avx2::multi_q6_k(row, a, o);
                    }
                    return;
                }
                _ => {}
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acts) {
        *o = dot_q8(w, row, a);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use gemma_quant::act::ActQ8;
    use std::arch::x86_64::*;

    /// The f16 at `b[i..i+2]`, converted in hardware (F16C). The bits go in
    /// with a `vmovd`, which writes the whole register: from intrinsics
    /// (`_mm_cvtsi32_si128`, `_mm_set1_epi16`) LLVM emits a `vpinsrw` into
    /// whatever register it likes, often a loop's accumulator, and that false
    /// dependency chained every block of a dot product to the previous
    /// block's FMA (decode ran at a third of the bandwidth limit).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(b: &[u8], i: usize) -> f32 {
        let bits = (b.as_ptr().add(i) as *const u16).read_unaligned() as u32;
        let v: __m128i;
        // SAFETY: vmovd from a general register into an xmm register; no memory, no flags.
        std::arch::asm!("vmovd {v}, {b:e}", v = out(xmm_reg) v, b = in(reg) bits, options(pure, nomem, nostack, preserves_flags));
        _mm_cvtss_f32(_mm_cvtph_ps(v))
    }

    /// The f16 at `b[i..i+2]` in all 8 lanes: the same value as
    /// [`f16_at`], made a whole vector (a broadcast, no false dependency).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16x8_at(b: &[u8], i: usize) -> __m256 {
        let bits = (b.as_ptr().add(i) as *const u16).read_unaligned();
        _mm256_cvtph_ps(_mm_set1_epi16(bits as i16))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_ps(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// Signed i8 × signed i8, 32 lanes, summed pairwise into 8 i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_i8x32(w: __m256i, x: __m256i) -> __m256i {
        let aw = _mm256_sign_epi8(w, w);
        let sx = _mm256_sign_epi8(x, w);
        _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(row: &[u8], a: &ActQ8) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, blk) in row.chunks_exact(34).enumerate() {
            let w = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
            let x = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b) as *const __m256i);
            let p = _mm256_cvtepi32_ps(dot_i8x32(w, x));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(f16x8_at(blk, 0), _mm256_set1_ps(*a.d.get_unchecked(b))), p, acc);
        }
        hsum_ps(acc)
    }

    /// Expand the 32 bits of `qh` to 32 bytes: 0xFF where the bit is set.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bits_to_bytes(qh: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
        let v = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
        let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64);
        let v = _mm256_or_si256(v, mask);
        _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q5_0(row: &[u8], a: &ActQ8) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let low = _mm_set1_epi8(0xF);
        for (b, blk) in row.chunks_exact(22).enumerate() {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let qs = _mm_loadu_si128(blk.as_ptr().add(6) as *const __m128i);
            let lo = _mm_and_si128(qs, low);
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low);
            let nib = _mm256_set_m128i(hi, lo);
            let hbit = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
            let w = _mm256_sub_epi8(_mm256_or_si256(nib, hbit), _mm256_set1_epi8(16));
            let x = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b) as *const __m256i);
            let p = _mm256_cvtepi32_ps(dot_i8x32(w, x));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(f16x8_at(blk, 0), _mm256_set1_ps(*a.d.get_unchecked(b))), p, acc);
        }
        hsum_ps(acc)
    }

    /// The 8 six-bit scales and 8 mins of a Q4_K block from its 12 scale
    /// bytes, four at a time in 32-bit words (no per-index branches).
    #[inline]
    pub(super) fn scales_mins_k4(sc: &[u8]) -> ([u8; 8], [u8; 8]) {
        let w = |i: usize| u32::from_le_bytes([sc[4 * i], sc[4 * i + 1], sc[4 * i + 2], sc[4 * i + 3]]);
        let (w0, w1, w2) = (w(0), w(1), w(2));
        let s_lo = w0 & 0x3f3f_3f3f;
        let s_hi = (w2 & 0x0f0f_0f0f) | (((w0 >> 6) & 0x0303_0303) << 4);
        let m_lo = w1 & 0x3f3f_3f3f;
        let m_hi = ((w2 >> 4) & 0x0f0f_0f0f) | (((w1 >> 6) & 0x0303_0303) << 4);
        let join = |lo: u32, hi: u32| -> [u8; 8] { ((hi as u64) << 32 | lo as u64).to_le_bytes() };
        (join(s_lo, s_hi), join(m_lo, m_hi))
    }

    /// The byte shuffle that broadcasts 16-bit element `j` of each 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pick16(j: i16) -> __m256i {
        _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j))
    }

    /// One row: the integer sums of each block scaled into a float vector
    /// accumulator, the mins through the activation sums in another (one
    /// horizontal sum per row, not per block); scales and mins are widened
    /// and broadcast in vector registers, not from scalars.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_k(row: &[u8], a: &ActQ8) -> f32 {
        let low = _mm256_set1_epi8(0xF);
        let mut accf = _mm256_setzero_ps();
        let mut accm = _mm256_setzero_ps();
        for (b, blk) in row.chunks_exact(144).enumerate() {
            let dx = _mm256_set1_ps(*a.d.get_unchecked(b));
            let (scales, mins) = scales_mins_k4(&blk[4..16]);
            // The 8 scales as i16 in both lanes.
            let s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(scales.as_ptr() as *const __m128i)));
            let m32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(mins.as_ptr() as *const __m128i));
            let mprod = mins_by_sums(m32, a, b);
            let x = a.qs.as_ptr().add(256 * b);
            let mut acc = _mm256_setzero_si256();
            for c in 0..4 {
                let q = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                let xl = _mm256_loadu_si256(x.add(64 * c) as *const __m256i);
                let xh = _mm256_loadu_si256(x.add(64 * c + 32) as *const __m256i);
                let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_shuffle_epi8(s16, pick16(2 * c as i16)));
                let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), _mm256_shuffle_epi8(s16, pick16(2 * c as i16 + 1)));
                acc = _mm256_add_epi32(acc, _mm256_add_epi32(pl, ph));
            }
            accf = _mm256_fmadd_ps(_mm256_mul_ps(f16x8_at(blk, 0), dx), _mm256_cvtepi32_ps(acc), accf);
            accm = _mm256_fmadd_ps(_mm256_mul_ps(f16x8_at(blk, 2), dx), _mm256_cvtepi32_ps(mprod), accm);
        }
        hsum_ps(_mm256_sub_ps(accf, accm))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q6_k(row: &[u8], a: &ActQ8) -> f32 {
        let m4 = _mm256_set1_epi8(0xF);
        let m3 = _mm256_set1_epi8(3);
        let mut accf = _mm256_setzero_ps();
        for (b, blk) in row.chunks_exact(210).enumerate() {
            let d = _mm256_set1_ps(f16_at(blk, 208) * *a.d.get_unchecked(b));
            let sc = blk.as_ptr().add(192);
            let x = a.qs.as_ptr().add(256 * b);
            let sc_lo = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc as *const __m128i));
            let sc_hi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(8) as *const __m128i));
            let mut acc = minus_offset_k6(sc_lo, sc_hi, a, b);
            for n in 0..2 {
                // Scales 8n .. 8n+8 as i16 in both lanes; group g takes element
                // 2g in the low lane and 2g+1 in the high one.
                let s16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64(sc.add(8 * n) as *const __m128i)));
                let ql0 = _mm256_loadu_si256(blk.as_ptr().add(64 * n) as *const __m256i);
                let ql1 = _mm256_loadu_si256(blk.as_ptr().add(64 * n + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * n) as *const __m256i);
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4),
                    ),
                ];
                for (g, qv) in q.iter().enumerate() {
                    // Elements 128n + 32g .. +32: sub-blocks 8n + 2g and 8n + 2g + 1.
                    let xv = _mm256_loadu_si256(x.add(128 * n + 32 * g) as *const __m256i);
                    let (e0, e1) = (2 * g as i16, 2 * g as i16 + 1);
                    let pick = _mm256_set_m128i(_mm256_castsi256_si128(pick16(e1)), _mm256_castsi256_si128(pick16(e0)));
                    let scales = _mm256_shuffle_epi8(s16, pick);
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(*qv, xv), scales));
                }
            }
            accf = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(acc), accf);
        }
        hsum_ps(accf)
    }

    /// Unpack a Q5_0 block to 32 signed levels.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_q5_0(blk: &[u8]) -> __m256i {
        let low = _mm_set1_epi8(0xF);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let qs = _mm_loadu_si128(blk.as_ptr().add(6) as *const __m128i);
        let nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), low), _mm_and_si128(qs, low));
        let hbit = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
        _mm256_sub_epi8(_mm256_or_si256(nib, hbit), _mm256_set1_epi8(16))
    }

    /// Blocks of 32 signed levels (`Q5 = true`: Q5_0, else Q8_0) times each
    /// token's Q8_0 blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn multi_32<const Q5: bool>(row: &[u8], acts: &[&ActQ8], out: &mut [f32]) {
        let bb = if Q5 { 22 } else { 34 };
        let m = acts.len();
        let mut acc = [_mm256_setzero_ps(); super::MULTI];
        let mut xs = [std::ptr::null::<i8>(); super::MULTI];
        let mut ds = [std::ptr::null::<f32>(); super::MULTI];
        for t in 0..m {
            xs[t] = acts[t].qs.as_ptr();
            ds[t] = acts[t].d.as_ptr();
        }
        let nb = row.len() / bb;
        let base = row.as_ptr();
        for b in 0..nb {
            let blk = std::slice::from_raw_parts(base.add(b * bb), bb);
            let w = if Q5 { unpack_q5_0(blk) } else { _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i) };
            let aw = _mm256_sign_epi8(w, w);
            let dw = f16x8_at(blk, 0);
            for t in 0..m {
                let x = _mm256_loadu_si256(xs[t].add(32 * b) as *const __m256i);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(*ds[t].add(b))), _mm256_cvtepi32_ps(p), acc[t]);
            }
        }
        for t in 0..m {
            out[t] = hsum_ps(acc[t]);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn multi_q8_0(row: &[u8], acts: &[&ActQ8], out: &mut [f32]) {
        multi_32::<false>(row, acts, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn multi_q5_0(row: &[u8], acts: &[&ActQ8], out: &mut [f32]) {
        multi_32::<true>(row, acts, out)
    }

    /// Lane j: `mins[j]` × the sum of activation values 32j .. 32j+32 of
    /// block `b` (from the sums of 16).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mins_by_sums(m32: __m256i, a: &ActQ8, b: usize) -> __m256i {
        let bs = a.bsums.as_ptr().add(16 * b);
        let h = _mm256_hadd_epi32(_mm256_loadu_si256(bs as *const __m256i), _mm256_loadu_si256(bs.add(8) as *const __m256i));
        _mm256_mullo_epi32(m32, _mm256_permute4x64_epi64::<0b11_01_10_00>(h))
    }

    /// Q6_K's -32 offset of block `b` through the activation sums, lane-wise:
    /// −32 · sc[j] · bsums[j] (the 16 scales widened to i32 in two halves).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn minus_offset_k6(sc_lo: __m256i, sc_hi: __m256i, a: &ActQ8, b: usize) -> __m256i {
        let bs = a.bsums.as_ptr().add(16 * b);
        let off = _mm256_add_epi32(
            _mm256_mullo_epi32(sc_lo, _mm256_loadu_si256(bs as *const __m256i)),
            _mm256_mullo_epi32(sc_hi, _mm256_loadu_si256(bs.add(8) as *const __m256i)),
        );
        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5))
    }

    /// Up to 4 tokens: each block unpacked once, each token's block result
    /// into its float vector accumulator (one horizontal sum per token).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn multi_q4_k(row: &[u8], acts: &[&ActQ8], out: &mut [f32]) {
        let low = _mm256_set1_epi8(0xF);
        let mut accf = [_mm256_setzero_ps(); 4];
        for (b, blk) in row.chunks_exact(144).enumerate() {
            let (d, dmin) = (f16x8_at(blk, 0), f16x8_at(blk, 2));
            let (s8, m8) = scales_mins_k4(&blk[4..16]);
            let s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(s8.as_ptr() as *const __m128i)));
            let m32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(m8.as_ptr() as *const __m128i));
            let mut q = [_mm256_setzero_si256(); 8];
            let mut scales = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let v = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * c) as *const __m256i);
                q[2 * c] = _mm256_and_si256(v, low);
                q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            }
            for (j, sv) in scales.iter_mut().enumerate() {
                *sv = _mm256_shuffle_epi8(s16, pick16(j as i16));
            }
            for (t, a) in acts.iter().enumerate() {
                let x = a.qs.as_ptr().add(256 * b);
                let mut acc = _mm256_setzero_si256();
                for j in 0..8 {
                    let xv = _mm256_loadu_si256(x.add(32 * j) as *const __m256i);
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], xv), scales[j]));
                }
                let dx = _mm256_set1_ps(*a.d.get_unchecked(b));
                let f = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(acc), accf[t]);
                accf[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(mins_by_sums(m32, a, b)), f);
            }
        }
        for (o, acc) in out.iter_mut().zip(accf) {
            *o = hsum_ps(acc);
        }
    }

    /// Up to 4 tokens, as [`multi_q4_k`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn multi_q6_k(row: &[u8], acts: &[&ActQ8], out: &mut [f32]) {
        let m4 = _mm256_set1_epi8(0xF);
        let m3 = _mm256_set1_epi8(3);
        let mut accf = [_mm256_setzero_ps(); 4];
        for (b, blk) in row.chunks_exact(210).enumerate() {
            let d = f16x8_at(blk, 208);
            let sc = blk.as_ptr().add(192);
            let sc_lo = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc as *const __m128i));
            let sc_hi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(8) as *const __m128i));
            let mut q = [_mm256_setzero_si256(); 8];
            let mut scales = [_mm256_setzero_si256(); 8];
            for n in 0..2 {
                let s16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64(sc.add(8 * n) as *const __m128i)));
                let ql0 = _mm256_loadu_si256(blk.as_ptr().add(64 * n) as *const __m256i);
                let ql1 = _mm256_loadu_si256(blk.as_ptr().add(64 * n + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * n) as *const __m256i);
                q[4 * n] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
                q[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
                q[4 * n + 2] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4),
                );
                q[4 * n + 3] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4),
                );
                for g in 0..4 {
                    let (e0, e1) = (2 * g as i16, 2 * g as i16 + 1);
                    let pick = _mm256_set_m128i(_mm256_castsi256_si128(pick16(e1)), _mm256_castsi256_si128(pick16(e0)));
                    scales[4 * n + g] = _mm256_shuffle_epi8(s16, pick);
                }
            }
            for (t, a) in acts.iter().enumerate() {
                let x = a.qs.as_ptr().add(256 * b);
                let mut acc = minus_offset_k6(sc_lo, sc_hi, a, b);
                for k in 0..8 {
                    let xv = _mm256_loadu_si256(x.add(32 * k) as *const __m256i);
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], xv), scales[k]));
                }
                accf[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(*a.d.get_unchecked(b))), _mm256_cvtepi32_ps(acc), accf[t]);
            }
        }
        for (o, acc) in out.iter_mut().zip(accf) {
            *o = hsum_ps(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::tensor::ALL_DTYPES;
    use gemma_quant::act::{act_kind, dot_q8_ref};

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn word_wise_k4_scales_match_the_reference() {
        let mut sc = [0u8; 12];
        for seed in 0..2000u32 {
            for (i, b) in sc.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2654435761).rotate_left(i as u32 * 5) >> 3) as u8;
            }
            let (s, m) = avx2::scales_mins_k4(&sc);
            for j in 0..8 {
                assert_eq!((s[j], m[j]), gemma_quant::act::scale_min_k4(j, &sc), "{sc:?} {j}");
            }
        }
    }

    #[test]
    fn fast_paths_match_the_integer_reference() {
        let n = 1024;
        let w: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.3).collect();
        let x: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 / 89.0 - 0.5) * 4.0).collect();
        for dt in ALL_DTYPES.into_iter().filter(|d| d.is_quantized()) {
            let mut row = Vec::new();
            gemma_quant::quantize(dt, &w, &mut row).unwrap();
            let mut a = ActQ8::default();
            a.quantize(act_kind(dt).unwrap(), &x);
            let (got, want) = (dot_q8(dt, &row, &a), dot_q8_ref(dt, &row, &a));
            assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{dt}: {got} vs {want}");
            // Several tokens at once give each token's single dot.
            let xs: Vec<Vec<f32>> = (0..MULTI).map(|t| x.iter().map(|v| v * (t as f32 + 0.5)).collect()).collect();
            let acts: Vec<ActQ8> = xs
                .iter()
                .map(|xt| {
                    let mut a = ActQ8::default();
                    a.quantize(act_kind(dt).unwrap(), xt);
                    a
                })
                .collect();
            for m in 1..=MULTI {
                let refs: Vec<&ActQ8> = acts[..m].iter().collect();
                let mut out = vec![0f32; m];
                dot_q8_multi(dt, &row, &refs, &mut out);
                for (t, o) in out.iter().enumerate() {
                    let want = dot_q8_ref(dt, &row, &acts[t]);
                    assert!((o - want).abs() <= 1e-4 * want.abs().max(1.0), "{dt} multi {m} token {t}: {o} vs {want}");
                }
            }
        }
    }
}
