//! Batched decoding kernel (`matmul_decode` on AVX-512 VNNI): one weight
//! row at a time, unpacked in registers 256 columns at a time and
//! regrouped so that 32-bit lane `g` accumulates group `g` (16 columns) of
//! the super-chunk — the column order of the prefill GEMM (`gemm_packed`).
//! Four `vpdpbusd` then leave each group's integer sum in its lane, and one
//! convert, one scale multiply and one FMA finish the super-chunk per
//! token. The unpacking and regrouping are shared by up to
//! [`GEMV_TOKENS`] tokens, so batched decode costs a quarter of the float
//! work per token of natural-order kernels. Every
//! token's arithmetic is the same whatever the batch: results are bitwise
//! those of the token alone.

#![cfg(target_arch = "x86_64")]

use crate::gemm::{has_avx512_vnni, quantize_acts, OutPtr, QuantActs};
use crate::vnni::{Chunks, Q5_0, Q8_0};
use gemma_core::{DType, Matrix, Storage};
use gemma_quant::act::{act_kind, ActKind};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Tokens handled per pass (sharing each unpacked weight chunk).
pub const GEMV_TOKENS: usize = 8;

/// One token's activations in packed order, per super-chunk of 256 columns
/// (columns padded with zeros to a multiple of 256).
#[derive(Default)]
pub struct PackedTok {
    /// Chunk `k` of super-chunk `s` at `4s + k`: lane `g` = columns `16g + 4k ..+4`.
    x: Vec<__m512i>,
    /// Lane start `−offset · Σx` of each group.
    base: Vec<__m512i>,
    /// Scale of each group.
    sx: Vec<__m512>,
    /// `scale · Σ levels` of each group (for mins).
    xs: Vec<__m512>,
}

/// Regroup 4 natural-order chunks (lane `4g' + u` = unit `u` of group `g'`)
/// into packed order (vector `u`, lane `4j + g'` = unit `u` of group `g'` of chunk `j`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn regroup(c: [__m512i; 4]) -> [__m512i; 4] {
    let idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    let d: [__m512i; 4] = std::array::from_fn(|j| _mm512_permutexvar_epi32(idx, c[j]));
    let t0 = _mm512_shuffle_i64x2::<0b01_00_01_00>(d[0], d[1]);
    let t1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(d[0], d[1]);
    let t2 = _mm512_shuffle_i64x2::<0b01_00_01_00>(d[2], d[3]);
    let t3 = _mm512_shuffle_i64x2::<0b11_10_11_10>(d[2], d[3]);
    [
        _mm512_shuffle_i64x2::<0b10_00_10_00>(t0, t2),
        _mm512_shuffle_i64x2::<0b11_01_11_01>(t0, t2),
        _mm512_shuffle_i64x2::<0b10_00_10_00>(t1, t3),
        _mm512_shuffle_i64x2::<0b11_01_11_01>(t1, t3),
    ]
}

/// Four `__m128` as one `__m512` (lanes in order).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn concat4(v: [__m128; 4]) -> __m512 {
    let lo = _mm256_insertf128_ps(_mm256_castps128_ps256(v[0]), v[1], 1);
    let hi = _mm256_insertf128_ps(_mm256_castps128_ps256(v[2]), v[3], 1);
    _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1)
}

/// Pack token `t` of `a` for weights with level offset `offset`.
/// # Safety
/// AVX-512 F/BW/VNNI/DQ available; `t < a.n`; `a.cols` a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
pub unsafe fn pack_token(a: &QuantActs, t: usize, offset: u8, out: &mut PackedTok) {
    let (cols, ng) = (a.cols, a.cols / 16);
    let nch = cols / 64;
    let nsc = nch.div_ceil(4);
    out.x.clear();
    out.base.clear();
    out.sx.clear();
    out.xs.clear();
    let ov = _mm512_set1_epi8(offset as i8);
    let zero = _mm512_setzero_si512();
    for s in 0..nsc {
        let chunk = |j: usize| if 4 * s + j < nch { _mm512_loadu_si512(a.qs.as_ptr().add(t * cols + 64 * (4 * s + j)) as *const _) } else { zero };
        let p = regroup([chunk(0), chunk(1), chunk(2), chunk(3)]);
        let mut base = zero;
        for v in p {
            out.x.push(v);
            base = _mm512_dpbusd_epi32(base, ov, v);
        }
        out.base.push(_mm512_sub_epi32(zero, base));
        let grp = |src: &[f32]| {
            let g = |j: usize| if 4 * s + j < nch { _mm_loadu_ps(src.as_ptr().add(t * ng + 4 * (4 * s + j))) } else { _mm_setzero_ps() };
            concat4([g(0), g(1), g(2), g(3)])
        };
        out.sx.push(grp(&a.d16));
        out.xs.push(grp(&a.xs));
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
unsafe fn rows_k<K: Chunks>(row: *const u8, nch: usize, toks: &[&PackedTok], out: &mut [f32]) {
    let toks = &toks[..toks.len().min(GEMV_TOKENS)];
    let mut acc = [_mm512_setzero_ps(); GEMV_TOKENS];
    for s in 0..nch.div_ceil(4) {
        let mut w = [_mm512_setzero_si512(); 4];
        let mut sv = [_mm_setzero_ps(); 4];
        let mut mv = [_mm_setzero_ps(); 4];
        for j in 0..4 {
            if 4 * s + j < nch {
                (w[j], sv[j], mv[j]) = K::chunk(row, 4 * s + j);
            }
        }
        let p = regroup(w);
        let sw = concat4(sv);
        let mw = if K::MINS { concat4(mv) } else { _mm512_setzero_ps() };
        block_dot(&mut acc, toks, s, &p, sw, K::MINS.then_some(mw));
    }
    finish(&acc, toks, out);
}

/// Add super-chunk `s` of every token: its 16 group sums of the packed
/// levels `p`, times the weight scales `sw` and the token's, less the mins.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
unsafe fn block_dot(acc: &mut [__m512; GEMV_TOKENS], toks: &[&PackedTok], s: usize, p: &[__m512i; 4], sw: __m512, mw: Option<__m512>) {
    for (acc, a) in acc.iter_mut().zip(toks) {
        let mut idp = *a.base.get_unchecked(s);
        for (k, p) in p.iter().enumerate() {
            idp = _mm512_dpbusd_epi32(idp, *p, *a.x.get_unchecked(4 * s + k));
        }
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idp), _mm512_mul_ps(sw, *a.sx.get_unchecked(s)), *acc);
        if let Some(mw) = mw {
            *acc = _mm512_fnmadd_ps(mw, *a.xs.get_unchecked(s), *acc);
        }
    }
}

/// Each token's sum of its 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
unsafe fn finish(acc: &[__m512; GEMV_TOKENS], toks: &[&PackedTok], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(&acc[..toks.len().min(GEMV_TOKENS)]) {
        *o = _mm512_reduce_add_ps(*a);
    }
}

/// [`rows_k`] for Q4_K, bit for bit, with the whole 256-column block
/// unpacked at once straight into packed order: one two-source dword
/// permute, shift and mask per packed vector (lane `g = 4a + 2b + c` takes
/// dword `8a + 4c + u` of the 128 level bytes, nibble `b`), and the 8 scales
/// and mins decoded together (as `scale_min_k4`) and widened in vectors,
/// instead of 4 chunks, 12 shuffles and 16 scalar scale products.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
unsafe fn rows_q4k(row: *const u8, nch: usize, toks: &[&PackedTok], out: &mut [f32]) {
    let toks = &toks[..toks.len().min(GEMV_TOKENS)];
    let mut acc = [_mm512_setzero_ps(); GEMV_TOKENS];
    // Lane g = 4a + 2b + c: dword 8a + 4c (+ u), nibble b.
    let base = _mm512_set_epi32(28, 24, 28, 24, 20, 16, 20, 16, 12, 8, 12, 8, 4, 0, 4, 0);
    let shift = _mm512_set_epi32(4, 4, 0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4, 0, 0);
    let m4 = _mm512_set1_epi8(0xF);
    for s in 0..nch / 4 {
        let blk = row.add(144 * s);
        let q0 = _mm512_loadu_si512(blk.add(16) as *const _);
        let q1 = _mm512_loadu_si512(blk.add(80) as *const _);
        let mut p = [_mm512_setzero_si512(); 4];
        for (u, v) in p.iter_mut().enumerate() {
            let d = _mm512_permutex2var_epi32(q0, _mm512_add_epi32(base, _mm512_set1_epi32(u as i32)), q1);
            *v = _mm512_and_si512(_mm512_srlv_epi32(d, shift), m4);
        }
        // Scales and mins of the 8 sub-blocks (6 bits each, in 12 bytes).
        let u = |i: usize| u32::from_le_bytes(*(blk.add(4 + 4 * i) as *const [u8; 4]));
        let (u0, u1, u2) = (u(0), u(1), u(2));
        let sc = (u0 & 0x3F3F_3F3F) as u64 | (((u2 & 0x0F0F_0F0F) | (((u0 >> 6) & 0x0303_0303) << 4)) as u64) << 32;
        let mn = (u1 & 0x3F3F_3F3F) as u64 | ((((u2 >> 4) & 0x0F0F_0F0F) | (((u1 >> 6) & 0x0303_0303) << 4)) as u64) << 32;
        // d · s as in `rows_k` (the same f32 product, lanes in group order).
        let sw = widen_pairs(sc, h16(blk));
        let mw = widen_pairs(mn, h16(blk.add(2)));
        block_dot(&mut acc, toks, s, &p, sw, Some(mw));
    }
    finish(&acc, toks, out);
}

/// [`rows_k`] for Q6_K, bit for bit, with the whole 256-column block
/// unpacked at once into packed order: lane `g = 8n + 2qd + h` (half `n`,
/// quarter `qd`, half-group `h`) takes its low nibbles from `ql` dword
/// `16n + 8(qd mod 2) + 4h + u` (shift `4·⌊qd/2⌋`) and its top two bits from
/// `qh` dword `8n + 4h + u` (shift `2·qd`); the 16 scales are one widening.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
unsafe fn rows_q6k(row: *const u8, nch: usize, toks: &[&PackedTok], out: &mut [f32]) {
    let toks = &toks[..toks.len().min(GEMV_TOKENS)];
    let mut acc = [_mm512_setzero_ps(); GEMV_TOKENS];
    let lo_idx = _mm512_set_epi32(28, 24, 20, 16, 28, 24, 20, 16, 12, 8, 4, 0, 12, 8, 4, 0);
    let lo_shift = _mm512_set_epi32(4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0);
    let hi_idx = _mm512_set_epi32(12, 8, 12, 8, 12, 8, 12, 8, 4, 0, 4, 0, 4, 0, 4, 0);
    let hi_shift = _mm512_set_epi32(6, 6, 4, 4, 2, 2, 0, 0, 6, 6, 4, 4, 2, 2, 0, 0);
    let (m4, m3) = (_mm512_set1_epi8(0xF), _mm512_set1_epi8(3));
    for s in 0..nch / 4 {
        let blk = row.add(210 * s);
        let ql0 = _mm512_loadu_si512(blk as *const _);
        let ql1 = _mm512_loadu_si512(blk.add(64) as *const _);
        let qh = _mm512_loadu_si512(blk.add(128) as *const _);
        let mut p = [_mm512_setzero_si512(); 4];
        for (u, v) in p.iter_mut().enumerate() {
            let uu = _mm512_set1_epi32(u as i32);
            let lo = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutex2var_epi32(ql0, _mm512_add_epi32(lo_idx, uu), ql1), lo_shift), m4);
            let hi = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(hi_idx, uu), qh), hi_shift), m3);
            *v = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
        }
        // sc · d as in Q6K::chunk.
        let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(192) as *const __m128i)));
        let sw = _mm512_mul_ps(sc, _mm512_set1_ps(h16(blk.add(208))));
        block_dot(&mut acc, toks, s, &p, sw, None);
    }
    finish(&acc, toks, out);
}

/// `d · v_i` for the 8 bytes of `v`, each in two lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
unsafe fn widen_pairs(v: u64, d: f32) -> __m512 {
    let b = _mm_cvtsi64_si128(v as i64);
    _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b))))
}

/// The f16 at `p` as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
unsafe fn h16(p: *const u8) -> f32 {
    half::f16::from_le_bytes([*p, *p.add(1)]).to_f32()
}

/// `out[t] = row · toks[t]` for up to [`GEMV_TOKENS`] packed tokens.
/// # Safety
/// AVX-512 F/BW/VNNI/DQ available; `row` holds `64 · nch` columns of `dtype`
/// (Q8_0, Q5_0, Q4_K or Q6_K); the tokens were packed for that many columns.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,f16c")]
pub unsafe fn rows(dtype: DType, row: &[u8], nch: usize, toks: &[&PackedTok], out: &mut [f32]) {
    match dtype {
        DType::Q8_0 => rows_k::<Q8_0>(row.as_ptr(), nch, toks, out),
        DType::Q5_0 => rows_k::<Q5_0>(row.as_ptr(), nch, toks, out),
        DType::Q4_K => rows_q4k(row.as_ptr(), nch, toks, out),
        DType::Q6_K => rows_q6k(row.as_ptr(), nch, toks, out),
        other => panic!("gemv_packed::rows: {other} unsupported"),
    }
}

thread_local! {
    static TOKS: RefCell<(QuantActs, Vec<PackedTok>)> = RefCell::new(Default::default());
}

/// `y[t, r] = x[t, :] · w[r, :]` for decode tokens; false when not applicable.
pub fn matmul(x: &[f32], n: usize, w: &Matrix, y: &mut [f32]) -> bool {
    let Storage::Raw { dtype, bytes, .. } = &w.storage else { return false };
    let (rows_n, cols) = (w.rows, w.cols);
    if !has_avx512_vnni() || !crate::vnni::supports(*dtype) || !cols.is_multiple_of(64) || n == 0 {
        return false;
    }
    let Some(kind) = act_kind(*dtype) else { return false };
    if kind == ActKind::Q8K && !cols.is_multiple_of(256) {
        return false;
    }
    let offset = gemma_quant::levels::level_form(*dtype).map_or(0, |f| f.offset);
    TOKS.with(|b| {
        let (acts, toks) = &mut *b.borrow_mut();
        quantize_acts(x, n, cols, kind, acts);
        toks.resize_with(toks.len().max(n), Default::default);
        for (t, p) in toks.iter_mut().take(n).enumerate() {
            // SAFETY: AVX-512 with DQ detected; t < n <= acts.n; cols % 64 == 0.
            unsafe { pack_token(acts, t, offset, p) };
        }
        let toks = &toks[..n];
        let (dtype, rb, data, nch) = (*dtype, w.row_bytes(), bytes.as_slice(), cols / 64);
        let out = OutPtr(y.as_mut_ptr());
        let per = rows_n.div_ceil(crate::pool::global().threads() * 16).max(32);
        crate::pool::parallel_for(rows_n.div_ceil(per), &|task| {
            let mut res = [0f32; GEMV_TOKENS];
            let end = ((task + 1) * per).min(rows_n);
            for r in task * per..end {
                let row = &data[r * rb..(r + 1) * rb];
                crate::prefetch::stream_ahead(&data[..end * rb], r * rb, rb);
                for (g, group) in toks.chunks(GEMV_TOKENS).enumerate() {
                    let refs: [&PackedTok; GEMV_TOKENS] = std::array::from_fn(|i| &group[i.min(group.len() - 1)]);
                    // SAFETY: AVX-512 with DQ detected; the row holds `cols` columns.
                    unsafe { rows(dtype, row, nch, &refs[..group.len()], &mut res) };
                    for (i, &v) in res[..group.len()].iter().enumerate() {
                        // SAFETY: element (t, r) is written by this row's task only.
                        unsafe { out.write((g * GEMV_TOKENS + i) * rows_n + r, v) };
                    }
                }
            }
        });
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::quantize_acts_ref;
    use gemma_quant::levels::{level_form, unpack_levels};

    /// The whole-block Q4_K and Q6_K paths equal the chunked ones bit for bit.
    #[test]
    fn block_paths_equal_the_chunked_ones() {
        if !has_avx512_vnni() {
            return;
        }
        type Rows = unsafe fn(*const u8, usize, &[&PackedTok], &mut [f32]);
        let (chunked, block): ([Rows; 2], [Rows; 2]) = ([rows_k::<crate::vnni::Q4K>, rows_k::<crate::vnni::Q6K>], [rows_q4k, rows_q6k]);
        for (i, dt) in [DType::Q4_K, DType::Q6_K].into_iter().enumerate() {
            check_block_path(dt, chunked[i], block[i]);
        }
    }

    fn check_block_path(dt: DType, chunked: unsafe fn(*const u8, usize, &[&PackedTok], &mut [f32]), block: unsafe fn(*const u8, usize, &[&PackedTok], &mut [f32])) {
        let offset = level_form(dt).unwrap().offset;
        let (rows, cols) = (5, 1024);
        let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.45) * (0.1 + (i / 256 % 7) as f32 * 0.3)).collect();
        let mut raw = Vec::new();
        gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
        let rb = dt.bytes_for(cols);
        for n in [1, 4, 8] {
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * (1.0 + (i % 5) as f32)).collect();
            let mut a = QuantActs::default();
            quantize_acts_ref(&x, n, cols, ActKind::Q8K, &mut a);
            let toks: Vec<PackedTok> = (0..n)
                .map(|t| {
                    let mut p = PackedTok::default();
                    // SAFETY: AVX-512 VNNI/DQ checked above.
                    unsafe { pack_token(&a, t, offset, &mut p) };
                    p
                })
                .collect();
            let refs: Vec<&PackedTok> = toks.iter().collect();
            for r in 0..rows {
                let (mut want, mut got) = ([0f32; GEMV_TOKENS], [0f32; GEMV_TOKENS]);
                // SAFETY: as above; the row holds `cols` Q4_K columns.
                unsafe {
                    chunked(raw[r * rb..].as_ptr(), cols / 64, &refs, &mut want);
                    block(raw[r * rb..].as_ptr(), cols / 64, &refs, &mut got);
                }
                assert_eq!(want.map(f32::to_bits), got.map(f32::to_bits), "{dt} row {r}, {n} tokens");
            }
        }
    }

    /// Equal to the f64 product of the level-form weights and the 8-bit
    /// activations, for 1..=9 tokens, with and without column padding.
    #[test]
    fn packed_decode_equals_the_reference() {
        if !has_avx512_vnni() {
            eprintln!("no AVX-512 VNNI/DQ on this CPU: nothing to test");
            return;
        }
        let cases = [(DType::Q8_0, 640), (DType::Q5_0, 640), (DType::Q8_0, 512), (DType::Q4_K, 512), (DType::Q6_K, 768)];
        for (dt, cols) in cases {
            let rows = 7;
            let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.45) * 0.2).collect();
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            let w = Matrix::new(rows, cols, Storage::Raw { dtype: dt, len: rows * cols, bytes: gemma_core::tensor::Bytes::Owned(raw.clone()) });
            let form = level_form(dt).unwrap();
            for n in [1, 3, 9] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * (1.0 + (i % 5) as f32)).collect();
                let mut y = vec![0f32; n * rows];
                assert!(matmul(&x, n, &w, &mut y));
                let mut a = QuantActs::default();
                quantize_acts_ref(&x, n, cols, act_kind(dt).unwrap(), &mut a);
                let rb = dt.bytes_for(cols);
                for r in 0..rows {
                    let (mut q, mut s, mut m) = (vec![0u8; cols], vec![0f32; cols / 16], vec![0f32; cols / 16]);
                    unpack_levels(dt, &raw[r * rb..(r + 1) * rb], &mut q, &mut s, &mut m);
                    for t in 0..n {
                        let want: f64 = (0..cols)
                            .map(|c| {
                                let wq = s[c / 16] as f64 * (q[c] as f64 - form.offset as f64) - m[c / 16] as f64;
                                wq * a.qs[t * cols + c] as f64 * a.d16[t * cols / 16 + c / 16] as f64
                            })
                            .sum();
                        let got = y[t * rows + r] as f64;
                        assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{dt} cols {cols} n {n} r {r} t {t}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
