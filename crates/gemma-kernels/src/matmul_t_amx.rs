//! The input gradient through a frozen bf16 weight on AMX-BF16 tiles:
//! `dx[n, in] = bf16(dy)[n, out] · W[out, in]`, summed in f32 — the
//! numerics of the forward's bf16 product ([`crate::gemm_amx_bf16`]) and
//! of PyTorch's backward through a bf16 layer, whose gradients are bf16.
//!
//! Here the tiles' inner dimension is `out`: A is the rounded gradient in
//! place (`[tokens, op]`), B two weight rows interleaved (the pair of rows
//! `2p, 2p + 1` at 16 columns). Each task owns 64 columns of `dx`; W is
//! packed [`K_CHUNK`] rows at a time (128 KiB, in L2), the C tiles of every
//! token pass kept in the task's buffer between chunks.

#![cfg(target_arch = "x86_64")]

use crate::gemm::OutPtr;
use crate::gemm_amx::{configure, Aligned};
use crate::gemm_amx_bf16::{amx_bf16_weight, round_acts, store_token, tile_config, tiles, KB, TILE, TOKENS_PER_PASS};
use gemma_core::Matrix;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows packed at a time (a multiple of [`KB`]).
const K_CHUNK: usize = 1024;
/// Columns of `dx` per task (four 16-column B tiles).
const COLS_PER_TASK: usize = 64;

thread_local! {
    /// The rounded gradient, `[tokens padded to 32, op]`.
    static GRADS: RefCell<Aligned> = RefCell::new(Aligned::default());
    /// A task's packed chunk of rows and the C tiles of all its token passes.
    static TASK: RefCell<(Aligned, Aligned)> = RefCell::new(Default::default());
}

/// `dx = bf16(dy) · W` for a bf16 `W` on AMX (overwrites `dx`); false
/// (doing nothing) for other weight types or without AMX-BF16.
pub(crate) fn matmul_t(dy: &[f32], n: usize, w: &Matrix, dx: &mut [f32]) -> bool {
    let Some(bytes) = amx_bf16_weight(w, n) else { return false };
    assert_eq!(dy.len(), n * w.rows, "matmul_t: dy is not [n, out]");
    assert_eq!(dx.len(), n * w.cols, "matmul_t: dx is not [n, in]");
    // SAFETY: AMX-BF16 and AVX-512 available, tile state granted; shapes checked.
    unsafe { matmul_t_amx(dy, n, bytes, w.rows, w.cols, dx) };
    true
}

/// Pack rows `k0..k0 + 32·steps` of `w` (`[out, inp]` bf16; rows past
/// `out` and columns past `inp` zero) at columns `c0..c0 + 64` into B
/// tiles: the u32 at `(s·4 + ct)·1024 + 64·p` + `4·j` holds rows
/// `k0 + 32s + 2p` (low half) and `+ 1` (high half) at column `c0 + 16ct + j`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_t(w: *const u8, out: usize, inp: usize, k0: usize, steps: usize, c0: usize, dst: *mut u8) {
    let row = |o: usize, c: usize, mask: __mmask16| {
        if o < out && mask != 0 {
            // SAFETY: row o < out exists; the mask keeps the load to columns < inp.
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
                let o = k0 + KB * s + 2 * p;
                let v = _mm512_or_si512(row(o, c, mask), _mm512_slli_epi32::<16>(row(o + 1, c, mask)));
                // SAFETY: the tile (s, ct) lies within the steps · 4 tiles of dst.
                unsafe { _mm512_store_si512(dst.add((s * 4 + ct) * TILE + 64 * p) as *mut _, v) };
            }
        }
    }
}

/// The product on AMX.
/// # Safety
/// [`crate::gemm_amx::has_amx_bf16`] true; `w` holds `out · inp` bf16, `dy: [n, out]`, `dx: [n, inp]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn matmul_t_amx(dy: &[f32], n: usize, w: &[u8], out: usize, inp: usize, dx: &mut [f32]) {
    let op = out.div_ceil(KB) * KB;
    let passes = n.div_ceil(TOKENS_PER_PASS);
    GRADS.with(|g| {
        let g = &mut *g.borrow_mut();
        // SAFETY: AVX-512 available (has_amx_bf16 implies it).
        unsafe { round_acts(dy, n, out, op, g) };
        let (g, dst, cfg) = (&*g, OutPtr(dx.as_mut_ptr()), tile_config());
        crate::pool::parallel_for(inp.div_ceil(COLS_PER_TASK), &|task| {
            TASK.with(|b| {
                let (packed, c) = &mut *b.borrow_mut();
                let c0 = task * COLS_PER_TASK;
                let nc = COLS_PER_TASK.min(inp - c0);
                if packed.len != K_CHUNK / KB * 4 * TILE {
                    packed.zeroed(K_CHUNK / KB * 4 * TILE);
                }
                if c.len < passes * 2 * 4 * TILE {
                    c.zeroed(passes * 2 * 4 * TILE);
                }
                // SAFETY: AMX granted (has_amx_bf16); the configuration is valid.
                unsafe { configure(&cfg) };
                for k0 in (0..op).step_by(K_CHUNK) {
                    let steps = K_CHUNK.min(op - k0) / KB;
                    // SAFETY: AVX-512 available; packed holds K_CHUNK/32 · 4 tiles.
                    unsafe { pack_t(w.as_ptr(), out, inp, k0, steps, c0, packed.mut_ptr()) };
                    for tp in 0..passes {
                        for pair in 0..nc.div_ceil(32) {
                            // SAFETY: the pass's 32 tokens are in the padded gradient
                            // (op columns from k0), the pair's tiles in packed, its
                            // four C tiles in c.
                            unsafe {
                                let a = g.ptr().add((tp * TOKENS_PER_PASS * op + k0) * 2);
                                tiles(a, op * 2, packed.ptr().add(2 * pair * TILE), 4 * TILE, steps, c.mut_ptr().add((tp * 2 + pair) * 4 * TILE), k0 > 0);
                            }
                        }
                    }
                }
                let cf = c.ptr() as *const f32;
                for t in 0..n {
                    let (tp, tt) = (t / TOKENS_PER_PASS, t % TOKENS_PER_PASS);
                    for pair in 0..nc.div_ceil(32) {
                        // SAFETY: the pass and pair's four tiles are in c; dx[t,
                        // c0+32·pair..] (those < inp) is in dx, this task's alone.
                        unsafe { store_token(cf.add((tp * 2 + pair) * 1024), tt, nc - 32 * pair, dst.ptr().add(t * inp + c0 + 32 * pair)) };
                    }
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm_amx::has_amx_bf16;
    use gemma_core::Storage;
    use half::bf16;

    /// Rows and columns with and without padding, a row count past one
    /// chunk, token counts around the passes: within f32 rounding of the
    /// exact product of the rounded gradient.
    #[test]
    fn matches_the_rounded_product() {
        if !has_amx_bf16() {
            eprintln!("no AMX-BF16 here (or GEMMA_NO_AMX): skipped");
            return;
        }
        for (out, inp) in [(64, 64), (37, 72), (1100, 200), (33, 17)] {
            let v: Vec<bf16> = (0..out * inp).map(|i| bf16::from_f32(((i * 7919 % 1999) as f32 / 999.5 - 1.0) * 0.3)).collect();
            let w = Matrix::new(out, inp, Storage::BF16(v.clone()));
            for n in [4, 17, 33, 70] {
                let dy: Vec<f32> = (0..n * out).map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0).collect();
                let mut dx = vec![f32::NAN; n * inp];
                assert!(matmul_t(&dy, n, &w, &mut dx));
                for t in 0..n {
                    for c in 0..inp {
                        let e: f64 = (0..out).map(|o| f64::from(bf16::from_f32(dy[t * out + o]).to_f32()) * f64::from(v[o * inp + c].to_f32())).sum();
                        let g = f64::from(dx[t * inp + c]);
                        assert!((g - e).abs() <= 1e-5 * (out as f64).sqrt() * (1.0 + e.abs()), "{out}x{inp} n={n} [{t},{c}]: {g} vs {e}");
                    }
                }
            }
        }
    }
}
