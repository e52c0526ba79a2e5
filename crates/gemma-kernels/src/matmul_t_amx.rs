//! The input gradient through a frozen bf16 weight on AMX-BF16 tiles:
//! `dx[n, in] = bf16(dy)[n, out] · W[out, in]`, summed in f32 — the
//! numerics of the forward's bf16 product ([`crate::gemm_amx_bf16`]) and
//! of PyTorch's backward through a bf16 layer, whose gradients are bf16.
//!
//! Here the tiles' inner dimension is `out`: A is the rounded gradient in
//! place (`[tokens, op]`), B two weight rows interleaved (the pair of rows
//! `2p, 2p + 1` at 16 columns). W goes [`K_CHUNK`] rows at a time; each
//! task packs 64 columns of the chunk (128 KiB, in L2) and adds to that
//! column strip's C tiles, kept between chunks. A quantized W (QLoRA with
//! bf16 compute) is dequantized a chunk at a time into one shared bf16
//! chunk first.

#![cfg(target_arch = "x86_64")]

use crate::gemm::OutPtr;
use crate::gemm_amx::{configure, Aligned};
use crate::gemm_amx_bf16::{amx_bf16_weight, round_acts, store_token, tile_config, tiles, Bf16Rows, KB, TILE, TOKENS_PER_PASS};
use gemma_core::Matrix;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows packed at a time (a multiple of [`KB`]).
const K_CHUNK: usize = 1024;
/// Columns of `dx` per task (four 16-column B tiles).
const COLS_PER_TASK: usize = 64;

thread_local! {
    /// The caller's buffers: the rounded gradient (`[tokens padded to 32,
    /// op]`), the C tiles of every column strip and token pass, and a chunk
    /// of quantized rows dequantized to bf16 (`[K_CHUNK, inp]`).
    static CALL: RefCell<(Aligned, Aligned, Aligned)> = RefCell::new(Default::default());
    /// A task's packed B tiles and a dequantized row.
    static TASK: RefCell<(Aligned, Vec<f32>)> = RefCell::new(Default::default());
}

/// `dx = bf16(dy) · W` on AMX (overwrites `dx`) for a bf16 `W`, or with
/// `quantized` one of block type (dequantized to bf16); false (doing
/// nothing) for other weight types or without AMX-BF16.
pub(crate) fn matmul_t(dy: &[f32], n: usize, w: &Matrix, dx: &mut [f32], quantized: bool) -> bool {
    let Some(rows) = amx_bf16_weight(w, n, quantized) else { return false };
    assert_eq!(dy.len(), n * w.rows, "matmul_t: dy is not [n, out]");
    assert_eq!(dx.len(), n * w.cols, "matmul_t: dx is not [n, in]");
    // SAFETY: AMX-BF16 and AVX-512 available, tile state granted; shapes checked.
    unsafe { matmul_t_amx(dy, n, rows, w.rows, w.cols, dx) };
    true
}

/// Pack rows `0..32·steps` of `w` (bf16, `inp` a row; rows from `valid`
/// on and columns past `inp` zero) at columns `c0..c0 + 64` into B tiles:
/// the u32 at `(s·4 + ct)·1024 + 64·p + 4·j` holds rows `32s + 2p` (low
/// half) and `+ 1` (high half) at column `c0 + 16ct + j`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_t(w: *const u8, valid: usize, inp: usize, steps: usize, c0: usize, dst: *mut u8) {
    let row = |o: usize, c: usize, mask: __mmask16| {
        if o < valid && mask != 0 {
            // SAFETY: row o < valid exists; the mask keeps the load to columns < inp.
            unsafe { _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, w.add((o * inp + c) * 2) as *const _)) }
        } else {
            _mm512_setzero_si512()
        }
    };
    for ct in 0..COLS_PER_TASK / 16 {
        let c = c0 + 16 * ct;
        let mask = ((1u32 << inp.saturating_sub(c).min(16)) - 1) as __mmask16;
        for s in 0..steps {
            for p in 0..16 {
                let o = KB * s + 2 * p;
                let v = _mm512_or_si512(row(o, c, mask), _mm512_slli_epi32::<16>(row(o + 1, c, mask)));
                // SAFETY: the tile (s, ct) lies within the steps · 4 tiles of dst.
                unsafe { _mm512_store_si512(dst.add((s * 4 + ct) * TILE + 64 * p) as *mut _, v) };
            }
        }
    }
}

/// Rows dequantized by one task of a chunk.
const DEQUANT_ROWS: usize = 32;

/// The product on AMX: chunk by chunk of [`K_CHUNK`] rows (quantized rows
/// dequantized into one shared bf16 chunk first), each chunk's column
/// strips in parallel, adding to the strips' C tiles.
/// # Safety
/// [`crate::gemm_amx::has_amx_bf16`] true; `w` holds `out` rows of `inp`, `dy: [n, out]`, `dx: [n, inp]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn matmul_t_amx(dy: &[f32], n: usize, w: Bf16Rows, out: usize, inp: usize, dx: &mut [f32]) {
    let op = out.div_ceil(KB) * KB;
    let passes = n.div_ceil(TOKENS_PER_PASS);
    let strips = inp.div_ceil(COLS_PER_TASK);
    // Bytes of one strip's C tiles (all passes, two 32-column pairs, four tiles each).
    let strip_c = passes * 2 * 4 * TILE;
    CALL.with(|b| {
        let (g, c, chunk) = &mut *b.borrow_mut();
        // SAFETY: AVX-512 available (has_amx_bf16 implies it).
        unsafe { round_acts(dy, n, out, op, g) };
        // The first chunk starts its tiles from zero: no clearing here.
        c.reuse(strips * strip_c);
        let cfg = tile_config();
        let cp = OutPtr(c.mut_ptr() as *mut f32);
        for k0 in (0..op).step_by(K_CHUNK) {
            let valid = K_CHUNK.min(out.saturating_sub(k0));
            let steps = K_CHUNK.min(op - k0) / KB;
            let src: *const u8 = match w {
                Bf16Rows::Bf16(b) => b[k0 * inp * 2..].as_ptr(),
                Bf16Rows::Quant { .. } => {
                    if chunk.len < K_CHUNK * inp * 2 {
                        chunk.zeroed(K_CHUNK * inp * 2);
                    }
                    let dst = OutPtr(chunk.mut_ptr() as *mut f32);
                    crate::pool::parallel_for(valid.div_ceil(DEQUANT_ROWS), &|t| {
                        let r = t * DEQUANT_ROWS;
                        // SAFETY: rows r..r+nr of the chunk (inp u16 each) are this task's alone.
                        TASK.with(|b| unsafe { w.rows_to(k0 + r, DEQUANT_ROWS.min(valid - r), inp, (dst.ptr() as *mut u16).add(r * inp), inp, &mut b.borrow_mut().1) });
                    });
                    chunk.ptr()
                }
            };
            let src = OutPtr(src as *mut f32);
            let g = &*g;
            crate::pool::parallel_for(strips, &|strip| {
                TASK.with(|b| {
                    let packed = &mut b.borrow_mut().0;
                    let c0 = strip * COLS_PER_TASK;
                    let nc = COLS_PER_TASK.min(inp - c0);
                    if packed.len != K_CHUNK / KB * 4 * TILE {
                        packed.zeroed(K_CHUNK / KB * 4 * TILE);
                    }
                    // SAFETY: AVX-512 and AMX available, the tile state granted;
                    // the chunk's rows (valid of them) are at src, inp bf16 each;
                    // the pass's 32 tokens are in the padded gradient (op columns
                    // from k0), the pair's tiles in packed, its C tiles in this
                    // strip's part of c (this task's alone).
                    unsafe {
                        pack_t(src.ptr() as *const u8, valid, inp, steps, c0, packed.mut_ptr());
                        configure(&cfg);
                        for tp in 0..passes {
                            for pair in 0..nc.div_ceil(32) {
                                let a = g.ptr().add((tp * TOKENS_PER_PASS * op + k0) * 2);
                                let ct = (cp.ptr() as *mut u8).add(strip * strip_c + (tp * 2 + pair) * 4 * TILE);
                                tiles(a, op * 2, packed.ptr().add(2 * pair * TILE), 4 * TILE, steps, ct, k0 > 0);
                            }
                        }
                    }
                });
            });
        }
        let (dst, cf) = (OutPtr(dx.as_mut_ptr()), c.ptr() as *const f32);
        let cf = OutPtr(cf as *mut f32);
        crate::pool::parallel_for(strips, &|strip| {
            let (c0, nc) = (strip * COLS_PER_TASK, COLS_PER_TASK.min(inp - strip * COLS_PER_TASK));
            for t in 0..n {
                let (tp, tt) = (t / TOKENS_PER_PASS, t % TOKENS_PER_PASS);
                for pair in 0..nc.div_ceil(32) {
                    // SAFETY: AVX-512 available; the strip's pass and pair's four
                    // tiles are in c; dx[t, c0+32·pair..] (those < inp) is in
                    // dx and this task's alone.
                    unsafe { store_token(cf.ptr().add((strip * strip_c + (tp * 2 + pair) * 4 * TILE) / 4), tt, nc - 32 * pair, dst.ptr().add(t * inp + c0 + 32 * pair)) };
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm_amx::has_amx_bf16;
    use gemma_core::{DType, Storage};
    use half::bf16;

    /// bf16 and quantized weights (dequantized to bf16), rows and columns
    /// with and without padding, a row count past one chunk, token counts
    /// around the passes: within f32 rounding of the exact product of the
    /// rounded gradient and the bf16 weight.
    #[test]
    fn matches_the_rounded_product() {
        if !has_amx_bf16() {
            eprintln!("no AMX-BF16 here (or GEMMA_NO_AMX): skipped");
            return;
        }
        for (dtype, out, inp) in [(DType::BF16, 64, 64), (DType::BF16, 37, 72), (DType::BF16, 1100, 200), (DType::BF16, 33, 17), (DType::Q4_K, 1100, 256), (DType::Q8_0, 37, 96), (DType::Q6_K, 40, 512)] {
            let vals: Vec<f32> = (0..out * inp).map(|i| ((i * 7919 % 1999) as f32 / 999.5 - 1.0) * 0.3).collect();
            let w = Matrix::new(out, inp, gemma_quant::convert(Storage::F32(vals), dtype).unwrap());
            // The weight as the product sees it: dequantized, rounded to bf16.
            let mut v = vec![0f32; out * inp];
            gemma_quant::read_f32(&w.storage, 0, &mut v);
            let v: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            for n in [4, 17, 33, 70] {
                let dy: Vec<f32> = (0..n * out).map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0).collect();
                let mut dx = vec![f32::NAN; n * inp];
                assert!(matmul_t(&dy, n, &w, &mut dx, true), "{dtype:?}");
                for t in 0..n {
                    for c in 0..inp {
                        let e: f64 = (0..out).map(|o| f64::from(bf16::from_f32(dy[t * out + o]).to_f32()) * f64::from(v[o * inp + c].to_f32())).sum();
                        let g = f64::from(dx[t * inp + c]);
                        assert!((g - e).abs() <= 1e-5 * (out as f64).sqrt() * (1.0 + e.abs()), "{dtype:?} {out}x{inp} n={n} [{t},{c}]: {g} vs {e}");
                    }
                }
            }
        }
    }
}
