//! The bf16 prefill GEMM on AMX-BF16 tiles (`TDPBF16PS`): bf16 weights
//! times activations rounded to bf16 (round to nearest even), summed in
//! f32 — the product transformers computes for a bf16 checkpoint, whose
//! hidden states are bf16 at every matmul, and llama.cpp's for BF16 files.
//!
//! Tiles: C[16 tokens × 16 rows] (f32) += A[16 tokens × 32 columns] (bf16)
//! · B[16 column pairs × 16 rows × 2] (bf16), two token tiles by two row
//! tiles in flight (tmm0–3 C, tmm4–5 A, tmm6–7 B). A is read in place from
//! the rounded activations (`[tokens, cp]`, one 64-byte row a token); B is
//! each task's rows packed once into VNNI pair order.
//!
//! Every output is summed over the same column steps in the same order
//! whatever the number of tokens, so a prompt gives the same result however
//! it is cut into chunks (the reason this path starts at
//! [`crate::gemm::MIN_TOKENS`], where the float GEMM would, not where AMX
//! starts paying off).

#![cfg(target_arch = "x86_64")]

use crate::gemm::OutPtr;
use crate::gemm_amx::{configure, has_amx_bf16, Aligned};
use gemma_core::{DType, Matrix, Storage};
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of W packed by one task (four 16-row B tiles per column step).
const ROWS_PER_TASK: usize = 64;
/// Columns per tile step (32 bf16 = one 64-byte tile row).
pub(crate) const KB: usize = 32;
/// Tokens per pass of the tile kernel (two 16-token A tiles).
pub(crate) const TOKENS_PER_PASS: usize = 32;
/// Bytes of one tile (16 rows × 64 bytes).
pub(crate) const TILE: usize = 1024;

thread_local! {
    /// The activations rounded to bf16, `[tokens padded to 32, cp]`.
    static ACTS: RefCell<Aligned> = RefCell::new(Aligned::default());
    /// A task's packed rows `[cp/32 steps, 4 row tiles, 16 pairs, 16 rows, 2]`,
    /// its rows copied with zero padding where the columns need it
    /// (`[64, cp]` bf16), the four C tiles, and a dequantized row.
    static ROWS: RefCell<(Aligned, Aligned, Aligned, Vec<f32>)> = RefCell::new(Default::default());
}

/// `y = bf16(x) · wᵀ` for bf16 weights on AMX; false (doing nothing) for
/// other weight types or where AMX-BF16 is not available (`GEMMA_NO_AMX=1`
/// turns it off).
/// With `quantized`, block types too (dequantized and rounded to bf16).
pub(crate) fn gemm(x: &[f32], n: usize, w: &Matrix, y: &mut [f32], quantized: bool) -> bool {
    let Some(rows) = amx_bf16_weight(w, n, quantized) else { return false };
    assert_eq!(x.len(), n * w.cols, "gemm input has the wrong length");
    assert_eq!(y.len(), n * w.rows, "gemm output has the wrong length");
    // SAFETY: AMX-BF16 and AVX-512 available, tile state granted (has_amx_bf16); shapes checked.
    unsafe { gemm_amx(x, n, rows, w.rows, w.cols, y) };
    true
}

/// Where the AMX-BF16 products read a weight's rows.
#[derive(Clone, Copy)]
pub(crate) enum Bf16Rows<'a> {
    /// bf16 elements (in memory or mapped), `cols` a row.
    Bf16(&'a [u8]),
    /// Quantized blocks of `dtype`, `rb` bytes a row: dequantized and
    /// rounded to bf16 as the product needs them (QLoRA's bf16 compute).
    Quant { dtype: DType, bytes: &'a [u8], rb: usize },
}

impl Bf16Rows<'_> {
    /// Rows `r0..r0 + nr` (`cols` each) as bf16 at `dst`, `stride` elements
    /// a row (the columns past `cols` untouched); `f` a scratch row.
    /// # Safety
    /// `dst` holds `nr` rows of `stride ≥ cols` u16; the rows exist;
    /// AVX-512 available (the rounding loop is compiled for it).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn rows_to(&self, r0: usize, nr: usize, cols: usize, dst: *mut u16, stride: usize, f: &mut Vec<f32>) {
        for i in 0..nr {
            // SAFETY: row i of dst has stride ≥ cols elements (the caller's contract).
            let d = unsafe { std::slice::from_raw_parts_mut(dst.add(i * stride), cols) };
            match *self {
                Bf16Rows::Bf16(w) => {
                    for (d, b) in d.iter_mut().zip(w[(r0 + i) * cols * 2..(r0 + i + 1) * cols * 2].chunks_exact(2)) {
                        *d = u16::from_le_bytes([b[0], b[1]]);
                    }
                }
                Bf16Rows::Quant { dtype: DType::Q8_0, bytes, rb } => {
                    // SAFETY: AVX-512 available (the caller's contract).
                    unsafe { q8_0_to_bf16(&bytes[(r0 + i) * rb..(r0 + i + 1) * rb], d, f) };
                }
                Bf16Rows::Quant { dtype: DType::Q5_0, bytes, rb } => {
                    // SAFETY: AVX-512 available (the caller's contract).
                    unsafe { q5_0_to_bf16(&bytes[(r0 + i) * rb..(r0 + i + 1) * rb], d, f) };
                }
                Bf16Rows::Quant { dtype, bytes, rb } => {
                    f.resize(cols, 0.0);
                    gemma_quant::dequantize(dtype, &bytes[(r0 + i) * rb..(r0 + i + 1) * rb], f);
                    d.iter_mut().zip(f.iter()).for_each(|(d, &v)| *d = round_bf16(v));
                }
            }
        }
    }
}

/// Q8_0 blocks (`d` f16, 32 × i8) straight to bf16: `round_bf16(q · d)`
/// for each value, as dequantizing then rounding gives (a block whose scale
/// is not finite takes that scalar path, for its NaN handling).
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q8_0_to_bf16(row: &[u8], out: &mut [u16], f: &mut Vec<f32>) {
    for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
        let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
        if !d.is_finite() {
            block_to_bf16_scalar(DType::Q8_0, blk, o, f);
            continue;
        }
        for h in 0..2 {
            // SAFETY: the block holds 32 quants after the scale; o holds 32 values.
            unsafe {
                let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(blk.as_ptr().add(2 + 16 * h) as *const _));
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(d));
                _mm256_storeu_si256(o.as_mut_ptr().add(16 * h) as *mut _, round_bf16x16(v));
            }
        }
    }
}

/// `round_bf16` of 16 finite f32 values, as u16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn round_bf16x16(v: __m512) -> __m256i {
    let b = _mm512_castps_si512(v);
    // (b + 0x7fff + ((b >> 16) & 1)) >> 16, as round_bf16 on finite values.
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb)))
}

/// Quantized blocks whose scale is not finite: dequantize then round, in
/// scalar code (for its NaN handling).
fn block_to_bf16_scalar(dtype: DType, blk: &[u8], o: &mut [u16], f: &mut Vec<f32>) {
    f.resize(o.len(), 0.0);
    gemma_quant::dequantize(dtype, blk, &mut f[..o.len()]);
    o.iter_mut().zip(f.iter()).for_each(|(o, &v)| *o = round_bf16(v));
}

/// Q5_0 blocks (`d` f16, 32 high bits, 16 bytes of low nibbles) straight to
/// bf16: `round_bf16((q − 16) · d)` for each value, as dequantizing then
/// rounding gives.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q5_0_to_bf16(row: &[u8], out: &mut [u16], f: &mut Vec<f32>) {
    let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (blk, o) in row.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
        if !d.is_finite() {
            block_to_bf16_scalar(DType::Q5_0, blk, o, f);
            continue;
        }
        let qh = _mm512_set1_epi32(i32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]));
        // SAFETY: the block holds 16 bytes of nibbles at 6; o holds 32 values.
        unsafe {
            let qs = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.as_ptr().add(6) as *const _));
            let low = _mm512_and_si512(qs, _mm512_set1_epi32(0xf));
            let high = _mm512_srli_epi32::<4>(qs);
            for (h, nib) in [low, high].into_iter().enumerate() {
                // Bit 16·h + j of qh is bit 4 of value 16·h + j.
                let hb = _mm512_and_si512(_mm512_srlv_epi32(qh, _mm512_add_epi32(lanes, _mm512_set1_epi32(16 * h as i32))), _mm512_set1_epi32(1));
                let q = _mm512_sub_epi32(_mm512_or_si512(nib, _mm512_slli_epi32::<4>(hb)), _mm512_set1_epi32(16));
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(d));
                _mm256_storeu_si256(o.as_mut_ptr().add(16 * h) as *mut _, round_bf16x16(v));
            }
        }
    }
}

/// The rows of `w` where the AMX-BF16 products take it: [`amx_bf16_rows`]
/// on a CPU with AMX-BF16. None otherwise.
pub(crate) fn amx_bf16_weight(w: &Matrix, n: usize, quantized: bool) -> Option<Bf16Rows<'_>> {
    if !has_amx_bf16() {
        return None;
    }
    amx_bf16_rows(w, n, quantized)
}

/// The rows of `w` as the bf16 products read them: a bf16 weight, or with
/// `quantized` one of block type, in a non-empty product. None otherwise.
pub(crate) fn amx_bf16_rows(w: &Matrix, n: usize, quantized: bool) -> Option<Bf16Rows<'_>> {
    let rows = match &w.storage {
        // SAFETY: bf16 is two plain bytes; the slice covers the same memory.
        Storage::BF16(v) => Bf16Rows::Bf16(unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) }),
        Storage::Raw { dtype: DType::BF16, bytes, .. } => Bf16Rows::Bf16(bytes.as_slice()),
        Storage::Raw { dtype, bytes, .. } if quantized && dtype.is_quantized() => Bf16Rows::Quant { dtype: *dtype, bytes: bytes.as_slice(), rb: w.row_bytes() },
        _ => return None,
    };
    if n == 0 || w.rows == 0 || w.cols == 0 {
        return None;
    }
    let (need, have) = match rows {
        Bf16Rows::Bf16(b) => (w.rows * w.cols * 2, b.len()),
        Bf16Rows::Quant { bytes, rb, .. } => (w.rows * rb, bytes.len()),
    };
    assert!(have >= need, "weight has fewer bytes than its shape");
    Some(rows)
}

/// bf16 bits of `v`, rounded to nearest even (NaN kept a quiet NaN).
#[inline(always)]
pub(crate) fn round_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Round `x: [n, cols]` to bf16 into `out: [n padded to 32, cp]`, zero padded.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn round_acts(x: &[f32], n: usize, cols: usize, cp: usize, out: &mut Aligned) {
    let np = n.div_ceil(TOKENS_PER_PASS) * TOKENS_PER_PASS;
    // Every element is written below (values, padding columns, padding
    // tokens): no clearing pass over the buffer.
    out.reuse(np * cp * 2);
    // SAFETY: the buffer holds np·cp u16, 64-byte aligned.
    let dst = unsafe { std::slice::from_raw_parts_mut(out.mut_ptr() as *mut u16, np * cp) };
    dst[n * cp..].fill(0);
    // Tokens in parallel for large inputs (a training head's gradient is
    // ~100 × 262,144 values); nested in a pool job this runs inline.
    let per = (1usize << 16).div_ceil(cp).max(1);
    crate::pool::parallel_chunks(&mut dst[..n * cp], per * cp, &|r, d| {
        for (i, d) in d.chunks_exact_mut(cp).enumerate() {
            let t = r.start / cp + i;
            // SAFETY: AVX-512 available (the caller's contract).
            unsafe { round_row(&x[t * cols..(t + 1) * cols], d) };
        }
    });
}

/// One token's row: `s` rounded into `d`, the rest of `d` zero.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_row(s: &[f32], d: &mut [u16]) {
    let (v, pad) = d.split_at_mut(s.len());
    for (d, &s) in v.iter_mut().zip(s) {
        *d = round_bf16(s);
    }
    pad.fill(0);
}

/// Pack rows `src` (`nr ≤ 64` rows, `stride` bytes apart, at least `cp`
/// bf16 each) into B tiles: the u32 at `(k·4 + rt)·1024 + 64·p + 4·r` is
/// the column pair `32k + 2p` of row `16·rt + r`; rows past `nr` are zero.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn pack(src: *const u8, stride: usize, nr: usize, cp: usize, out: *mut u8) {
    let idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(stride as i32));
    for rt in 0..ROWS_PER_TASK / 16 {
        let valid = nr.saturating_sub(16 * rt).min(16);
        let mask: __mmask16 = ((1u32 << valid) - 1) as __mmask16;
        // SAFETY: the masked gathers read rows < nr and columns < cp of src;
        // the stores stay inside the cp/32 · 4 tiles of out.
        unsafe {
            // Past the last row the mask is empty: the address is never read.
            let rows = src.wrapping_add(16 * rt * stride);
            for k in 0..cp / KB {
                let tile = out.add((k * 4 + rt) * TILE);
                for p in 0..16 {
                    let base = rows.wrapping_add((KB * k + 2 * p) * 2);
                    let v = _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, idx, base as *const _);
                    _mm512_store_si512(tile.add(64 * p) as *mut _, v);
                }
            }
        }
    }
}

/// The tile configuration: all eight tiles 16 rows × 64 bytes.
pub(crate) fn tile_config() -> [u8; 64] {
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    for t in 0..8 {
        cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
        cfg[48 + t] = 16;
    }
    cfg
}

/// C for 32 tokens × 32 rows over `steps` column steps: `a` the first
/// token's activations (`sa` bytes a token), `b` the first B tile of the
/// row pair (its second tile 1024 bytes on, the next step's `sb` on); the
/// four C tiles stored at `c` (tokens 0–15 × rows 0–15, 0–15 × 16–31,
/// 16–31 × 0–15, 16–31 × 16–31), starting from zero or, with
/// `accumulate`, from what `c` holds.
/// # Safety
/// Tile state configured by [`tile_config`]; the reads within the packed
/// buffers, `c` 4096 bytes, 64-byte aligned.
#[inline]
pub(crate) unsafe fn tiles(a: *const u8, sa: usize, b: *const u8, sb: usize, steps: usize, c: *mut u8, accumulate: bool) {
    // SAFETY: the caller's contract; the C tiles stay in tmm0–3 between
    // the two blocks (no compiled code uses tile registers).
    unsafe {
        if accumulate {
            asm!(
                "tileloadd tmm0, [{c} + {s64} * 1]",
                "tileloadd tmm1, [{c} + {s64} * 1 + 1024]",
                "tileloadd tmm2, [{c} + {s64} * 1 + 2048]",
                "tileloadd tmm3, [{c} + {s64} * 1 + 3072]",
                c = in(reg) c, s64 = in(reg) 64usize,
                options(nostack, readonly),
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
        asm!(
            "2:",
            "tileloadd tmm4, [{a0} + {sa} * 1]",
            "tileloadd tmm6, [{b} + {s64} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b} + {s64} * 1 + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa} * 1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b}, {sb}",
            "dec {k}",
            "jnz 2b",
            "tilestored [{c} + {s64} * 1], tmm0",
            "tilestored [{c} + {s64} * 1 + 1024], tmm1",
            "tilestored [{c} + {s64} * 1 + 2048], tmm2",
            "tilestored [{c} + {s64} * 1 + 3072], tmm3",
            a0 = inout(reg) a => _,
            a1 = inout(reg) a.add(16 * sa) => _,
            b = inout(reg) b => _,
            k = inout(reg) steps => _,
            sa = in(reg) sa,
            sb = in(reg) sb,
            s64 = in(reg) 64usize,
            c = in(reg) c,
            options(nostack),
        );
    }
}

/// Token `tt` (of 32) of four stored C tiles (`c`, as [`tiles`] leaves
/// them) to `dst`: its first `valid` (up to 32) of the 32 columns.
/// # Safety
/// AVX-512 available; `c` 4096 bytes, 64-byte aligned; `dst` `valid.min(32)` writable floats.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store_token(c: *const f32, tt: usize, valid: usize, dst: *mut f32) {
    for h in 0..2 {
        let v = valid.saturating_sub(16 * h).min(16);
        if v > 0 {
            // SAFETY: tile (tt/16, h) row tt%16 is in c; dst has v floats at 16·h.
            unsafe { _mm512_mask_storeu_ps(dst.add(16 * h), ((1u32 << v) - 1) as __mmask16, _mm512_load_ps(c.add(((tt / 16) * 2 + h) * 256 + (tt % 16) * 16))) };
        }
    }
}

/// Pack rows `r0..r0 + nr` (≤ 64) of `w` into `packed` as [`pack`] does:
/// bf16 rows in place when `cols` is a multiple of 32, else copied or
/// dequantized into `nat` with zero padding first (`f` a scratch row).
/// # Safety
/// AVX-512 available; the rows exist in `w`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn pack_task(w: Bf16Rows, r0: usize, nr: usize, cols: usize, packed: &mut Aligned, nat: &mut Aligned, f: &mut Vec<f32>) {
    let cp = cols.div_ceil(KB) * KB;
    if packed.len != cp / KB * 4 * TILE {
        packed.zeroed(cp / KB * 4 * TILE);
    }
    // SAFETY: the rows hold cp columns each (in place when cols = cp, else
    // in nat, zero padded), nr ≤ 64 of them; packed holds cp/32 · 4 tiles.
    unsafe {
        match w {
            Bf16Rows::Bf16(b) if cols == cp => pack(b[r0 * cols * 2..].as_ptr(), cols * 2, nr, cp, packed.mut_ptr()),
            _ => {
                // Padding columns must be zero; rows past nr are never read.
                if cp > cols {
                    nat.zeroed(ROWS_PER_TASK * cp * 2);
                } else {
                    nat.reuse(ROWS_PER_TASK * cp * 2);
                }
                w.rows_to(r0, nr, cols, nat.mut_ptr() as *mut u16, cp, f);
                pack(nat.ptr(), cp * 2, nr, cp, packed.mut_ptr());
            }
        }
    }
}

/// The product on AMX.
/// # Safety
/// [`has_amx_bf16`] true; `w` holds `rows` rows of `cols`, `x: [n, cols]`, `y: [n, rows]`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn gemm_amx(x: &[f32], n: usize, w: Bf16Rows, rows: usize, cols: usize, y: &mut [f32]) {
    let cp = cols.div_ceil(KB) * KB;
    let steps = cp / KB;
    ACTS.with(|acts| {
        let acts = &mut *acts.borrow_mut();
        // SAFETY: AVX-512 available (has_amx_bf16 implies it).
        unsafe { round_acts(x, n, cols, cp, acts) };
        let (acts, out, cfg) = (&*acts, OutPtr(y.as_mut_ptr()), tile_config());
        crate::pool::parallel_for(rows.div_ceil(ROWS_PER_TASK), &|task| {
            ROWS.with(|b| {
                let (packed, nat, c, f) = &mut *b.borrow_mut();
                let r0 = task * ROWS_PER_TASK;
                let nr = ROWS_PER_TASK.min(rows - r0);
                if c.len == 0 {
                    c.zeroed(4 * TILE);
                }
                // SAFETY: AVX-512 available (has_amx_bf16); the rows exist.
                unsafe { pack_task(w, r0, nr, cols, packed, nat, f) };
                // SAFETY: AMX granted (has_amx_bf16); the configuration is valid.
                unsafe { configure(&cfg) };
                let cf = c.ptr() as *const f32;
                for t0 in (0..n).step_by(TOKENS_PER_PASS) {
                    for pair in 0..nr.div_ceil(32) {
                        // SAFETY: tokens t0..t0+32 are in the padded activations,
                        // the pair's tiles in the packed rows, c holds 4 tiles.
                        unsafe { tiles(acts.ptr().add(t0 * cp * 2), cp * 2, packed.ptr().add(2 * pair * TILE), 4 * TILE, steps, c.mut_ptr(), false) };
                        for tt in 0..TOKENS_PER_PASS.min(n - t0) {
                            // SAFETY: c holds the four tiles; token t0+tt's rows
                            // r0+32·pair.. (those < rows) are in y, this task's alone.
                            unsafe { store_token(cf, tt, nr.saturating_sub(32 * pair), out.ptr().add((t0 + tt) * rows + r0 + 32 * pair)) };
                        }
                    }
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn matrix(rows: usize, cols: usize) -> Matrix {
        let v: Vec<bf16> = (0..rows * cols).map(|i| bf16::from_f32(((i * 7919 % 1000) as f32 / 1000.0 - 0.47) * 0.3)).collect();
        Matrix { rows, cols, storage: Storage::BF16(v) }
    }

    fn acts(n: usize, cols: usize) -> Vec<f32> {
        (0..n * cols).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * (1.0 + (i % 5) as f32) + 1e-3 * (i % 7) as f32).collect()
    }

    /// The f64 sum of `bf16(x) · w` for every token and row.
    fn reference(x: &[f32], n: usize, w: &Matrix) -> Vec<f64> {
        let Storage::BF16(v) = &w.storage else { unreachable!() };
        let mut y = vec![0f64; n * w.rows];
        for t in 0..n {
            for r in 0..w.rows {
                y[t * w.rows + r] = (0..w.cols).map(|c| f64::from(bf16::from_f32(x[t * w.cols + c]).to_f32()) * f64::from(v[r * w.cols + c].to_f32())).sum();
            }
        }
        y
    }

    #[test]
    fn rounding_is_nearest_even_like_half() {
        for v in [0.0f32, -0.0, 1.0, f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000), -3.3e-39, 3.4e38, f32::INFINITY, f32::NEG_INFINITY, 1.5e-40, 65504.7] {
            assert_eq!(round_bf16(v), bf16::from_f32(v).to_bits(), "{v}");
        }
        assert!(bf16::from_bits(round_bf16(f32::NAN)).is_nan());
        for i in 0..100_000u32 {
            let v = f32::from_bits(i.wrapping_mul(2_654_435_761));
            if !v.is_nan() {
                assert_eq!(round_bf16(v), bf16::from_f32(v).to_bits(), "{v:e}");
            }
        }
    }

    /// Odd rows and columns (padding of both), token counts around the
    /// tiles: within f32 rounding of the exact sum of the rounded inputs,
    /// and every token bit-identical whatever the number of tokens.
    #[test]
    fn matches_the_rounded_product_and_is_chunk_invariant() {
        if !has_amx_bf16() {
            eprintln!("no AMX-BF16 here (or GEMMA_NO_AMX): skipped");
            return;
        }
        for (rows, cols) in [(64, 64), (37, 96), (130, 1152), (20, 72)] {
            let w = matrix(rows, cols);
            let x = acts(40, cols);
            let want = reference(&x, 40, &w);
            let mut all = vec![0f32; 40 * rows];
            assert!(gemm(&x, 40, &w, &mut all, false));
            let bound: Vec<f64> = (0..40 * rows).map(|i| 1e-5 * (cols as f64).sqrt() * (1.0 + want[i].abs())).collect();
            for (i, (&g, &e)) in all.iter().zip(&want).enumerate() {
                assert!((f64::from(g) - e).abs() <= bound[i], "{rows}x{cols} [{i}]: {g} vs {e}");
            }
            for n in [4, 15, 16, 17, 33] {
                let mut part = vec![0f32; n * rows];
                assert!(gemm(&x[..n * cols], n, &w, &mut part, false));
                assert!(part.iter().zip(&all).all(|(a, b)| a.to_bits() == b.to_bits()), "{rows}x{cols} n={n} differs from n=40");
            }
        }
    }

    /// Quantized weights with bf16 compute: the product of the rounded
    /// activations and the dequantized weight rounded to bf16, and only
    /// when asked for.
    #[test]
    fn quantized_weights_with_bf16_compute() {
        if !has_amx_bf16() {
            eprintln!("no AMX-BF16 here (or GEMMA_NO_AMX): skipped");
            return;
        }
        for (dtype, rows, cols) in [(DType::Q4_K, 70, 512), (DType::Q8_0, 33, 96), (DType::Q5_0, 64, 64)] {
            let vals: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1999) as f32 / 999.5 - 1.0) * 0.3).collect();
            let w = Matrix { rows, cols, storage: gemma_quant::convert(Storage::F32(vals), dtype).unwrap() };
            let mut deq = vec![0f32; rows * cols];
            gemma_quant::read_f32(&w.storage, 0, &mut deq);
            let wb = Matrix { rows, cols, storage: Storage::BF16(deq.iter().map(|&v| bf16::from_f32(v)).collect()) };
            let x = acts(37, cols);
            let want = reference(&x, 37, &wb);
            let mut got = vec![0f32; 37 * rows];
            assert!(!gemm(&x, 37, &w, &mut got, false), "{dtype:?}: quantized without asking");
            assert!(gemm(&x, 37, &w, &mut got, true), "{dtype:?}");
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                assert!((f64::from(g) - e).abs() <= 1e-5 * (cols as f64).sqrt() * (1.0 + e.abs()), "{dtype:?} [{i}]: {g} vs {e}");
            }
        }
    }

    /// The Q8_0 and Q5_0 fast paths of `rows_to` are dequantize-then-round, bit for bit.
    #[test]
    fn q8_0_and_q5_0_rows_round_as_dequantized_values() {
        if !crate::gemm::has_avx512_vnni() {
            eprintln!("no AVX-512 here: skipped");
            return;
        }
        for dtype in [DType::Q8_0, DType::Q5_0, DType::Q4_K] {
            rows_round_as_dequantized_values(dtype);
        }
    }

    fn rows_round_as_dequantized_values(dtype: DType) {
        let (rows, cols) = (5, 256);
        let vals: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1999) as f32 / 999.5 - 1.0) * 37.0).collect();
        let w = Matrix { rows, cols, storage: gemma_quant::convert(Storage::F32(vals), dtype).unwrap() };
        let Storage::Raw { bytes, .. } = &w.storage else { unreachable!() };
        let src = Bf16Rows::Quant { dtype, bytes: bytes.as_slice(), rb: w.row_bytes() };
        let mut got = vec![0u16; rows * cols];
        // SAFETY: AVX-512 available (checked); got holds rows × cols.
        unsafe { src.rows_to(0, rows, cols, got.as_mut_ptr(), cols, &mut Vec::new()) };
        let mut deq = vec![0f32; rows * cols];
        gemma_quant::read_f32(&w.storage, 0, &mut deq);
        let want: Vec<u16> = deq.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
        assert_eq!(got, want, "{dtype:?}");
    }

    #[test]
    fn other_weight_types_are_left_to_the_float_path() {
        let w = Matrix { rows: 2, cols: 32, storage: Storage::F32(vec![0.5; 64]) };
        let mut y = vec![0f32; 8];
        assert!(!gemm(&[1.0; 128], 4, &w, &mut y, true));
    }
}
