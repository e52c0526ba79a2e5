//! The input gradient through a frozen weight: `dx[n, in] = dy[n, out] ·
//! W[out, in]` for a weight of any stored type (float or quantized). W's
//! rows are dequantized on the fly, a panel of [`PANEL`] rows at a time
//! (shared by all threads), so training a LoRA over a quantized base keeps
//! the base quantized (QLoRA) with no transposed copy. Each task then adds
//! the panel's contribution to a tile of tokens × a range of columns with
//! the accumulators in registers.

use crate::dot::{simd_level, SimdLevel};
use crate::pool;
use gemma_core::Matrix;

/// Weight rows dequantized at once (`PANEL × in` f32 values).
const PANEL: usize = 64;
/// Tokens per task.
const TOKEN_TILE: usize = 48;
/// Columns per task (a multiple of 16).
const COL_TILE: usize = 256;

/// Reference: `dx = dy · W`, row by row, in f64 sums. Overwrites `dx`.
pub fn matmul_t_ref(dy: &[f32], n: usize, w: &Matrix, dx: &mut [f32]) {
    let (out, inp) = (w.rows, w.cols);
    assert_eq!(dy.len(), n * out, "matmul_t: dy is not [n, out]");
    assert_eq!(dx.len(), n * inp, "matmul_t: dx is not [n, in]");
    let mut acc = vec![0f64; n * inp];
    let mut row = vec![0f32; inp];
    for o in 0..out {
        gemma_quant::read_f32(&w.storage, o * inp, &mut row);
        for t in 0..n {
            let g = dy[t * out + o] as f64;
            for (a, &r) in acc[t * inp..(t + 1) * inp].iter_mut().zip(&row) {
                *a += g * r as f64;
            }
        }
    }
    dx.iter_mut().zip(&acc).for_each(|(d, &a)| *d = a as f32);
}

/// `dx = dy · W` (overwrites `dx`), on all threads.
pub fn matmul_t(dy: &[f32], n: usize, w: &Matrix, dx: &mut [f32]) {
    let (out, inp) = (w.rows, w.cols);
    assert_eq!(dy.len(), n * out, "matmul_t: dy is not [n, out]");
    assert_eq!(dx.len(), n * inp, "matmul_t: dx is not [n, in]");
    // bf16 weights on AMX-BF16 (and quantized ones with bf16 training
    // compute): the gradient rounded to bf16, as the forward's bf16 product
    // rounds the activations.
    #[cfg(target_arch = "x86_64")]
    if crate::matmul_t_amx::matmul_t(dy, n, w, dx, crate::matmul::quantized_training_bf16()) {
        return;
    }
    dx.fill(0.0);
    let mut panel = vec![0f32; PANEL * inp];
    let tiles = n.div_ceil(TOKEN_TILE);
    let cols = inp.div_ceil(COL_TILE);
    let dst = pool::Disjoint::new(dx);
    for o0 in (0..out).step_by(PANEL) {
        let rows = PANEL.min(out - o0);
        {
            let pp = pool::Disjoint::new(&mut panel[..rows * inp]);
            let deq = |r: usize| {
                // SAFETY: row r of the panel is written by this task alone.
                let row = unsafe { pp.range(r * inp..(r + 1) * inp) };
                gemma_quant::read_f32(&w.storage, (o0 + r) * inp, row);
            };
            if rows * inp >= 1 << 14 {
                pool::parallel_for(rows, &deq);
            } else {
                (0..rows).for_each(deq);
            }
        }
        let panel = &panel[..rows * inp];
        pool::parallel_for(tiles * cols, &|task| {
            let (tile, ct) = (task / cols, task % cols);
            let (c0, c1) = (ct * COL_TILE, ((ct + 1) * COL_TILE).min(inp));
            let (t0, t1) = (tile * TOKEN_TILE, ((tile + 1) * TOKEN_TILE).min(n));
            // Column strips of 16 outermost: a strip of the panel (rows × 16
            // values, 4 KiB) stays in L1 across the tile's tokens.
            for cs in (c0..c1).step_by(STRIP) {
                let ce = (cs + STRIP).min(c1);
                let mut t = t0;
                while t < t1 {
                    let nt = GROUP.min(t1 - t);
                    // SAFETY: elements (t..t+nt, cs..ce) of dx belong to this task alone.
                    let d: [&mut [f32]; GROUP] = std::array::from_fn(|i| if i < nt { unsafe { dst.range((t + i) * inp + cs..(t + i) * inp + ce) } } else { &mut [] });
                    let g: [&[f32]; GROUP] = std::array::from_fn(|i| if i < nt { &dy[(t + i) * out + o0..(t + i) * out + o0 + rows] } else { &[][..] });
                    accumulate_panel(&g[..nt], panel, inp, cs, d);
                    t += nt;
                }
            }
        });
    }
}

/// Tokens whose accumulators share the registers (6 tokens × 16 columns:
/// twelve accumulators, two panel vectors and one broadcast fill AVX2's
/// sixteen registers).
const GROUP: usize = 6;
/// Columns per register tile.
const STRIP: usize = 16;

/// For each token `i < g.len()`: `d[i][c] += Σ_o g[i][o] · panel[o, c0 + c]`
/// over the columns of `d[i]` (all of one length).
fn accumulate_panel(g: &[&[f32]], panel: &[f32], stride: usize, c0: usize, d: [&mut [f32]; GROUP]) {
    #[cfg(target_arch = "x86_64")]
    if simd_level() != SimdLevel::Scalar {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time); indices stay in the slices.
        return unsafe { avx2::accumulate_panel(g, panel, stride, c0, d) };
    }
    accumulate_tail(g, panel, stride, c0, d, 0);
}

/// Scalar form of [`accumulate_panel`] from column `c` on.
fn accumulate_tail(g: &[&[f32]], panel: &[f32], stride: usize, c0: usize, mut d: [&mut [f32]; GROUP], c: usize) {
    for (gi, di) in g.iter().zip(d.iter_mut()) {
        let tail = &mut di[c..];
        for (o, &go) in gi.iter().enumerate() {
            let row = &panel[o * stride + c0 + c..o * stride + c0 + c + tail.len()];
            tail.iter_mut().zip(row).for_each(|(a, &r)| *a += go * r);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{GROUP, STRIP};
    use std::arch::x86_64::*;

    /// `g.len()` tokens (≤ 6) × 16 columns in registers over all panel
    /// rows; a column tail under 16 takes the scalar loop.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn accumulate_panel(g: &[&[f32]], panel: &[f32], stride: usize, c0: usize, d: [&mut [f32]; GROUP]) {
        let w = d[0].len();
        let rows = g[0].len();
        let gp: [*const f32; GROUP] = std::array::from_fn(|i| g.get(i).map_or(std::ptr::null(), |s| s.as_ptr()));
        let dp: [*mut f32; GROUP] = {
            let mut d = d;
            std::array::from_fn(|i| d[i].as_mut_ptr())
        };
        let mut c = 0;
        while c + STRIP <= w {
            let p = unsafe { panel.as_ptr().add(c0 + c) };
            // SAFETY: tokens < g.len() have `rows` gradients and `w` outputs; panel rows have `stride` values.
            unsafe {
                match g.len() {
                    6 => tile::<6>(gp, p, stride, rows, dp, c),
                    5 => tile::<5>(gp, p, stride, rows, dp, c),
                    4 => tile::<4>(gp, p, stride, rows, dp, c),
                    3 => tile::<3>(gp, p, stride, rows, dp, c),
                    2 => tile::<2>(gp, p, stride, rows, dp, c),
                    _ => tile::<1>(gp, p, stride, rows, dp, c),
                }
            }
            c += STRIP;
        }
        if c < w {
            // SAFETY: the pointers came from the slices, each used once more.
            let d: [&mut [f32]; GROUP] = std::array::from_fn(|i| if i < g.len() { unsafe { std::slice::from_raw_parts_mut(dp[i], w) } } else { &mut [] });
            super::accumulate_tail(g, panel, stride, c0, d, c);
        }
    }

    /// `NT` tokens × 16 columns at `c` of each output, over `rows` panel rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const NT: usize>(g: [*const f32; GROUP], p: *const f32, stride: usize, rows: usize, d: [*mut f32; GROUP], c: usize) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; NT];
            for o in 0..rows {
                let r = p.add(o * stride);
                let (r0, r1) = (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8)));
                for t in 0..NT {
                    let b = _mm256_broadcast_ss(&*g[t].add(o));
                    acc[t][0] = _mm256_fmadd_ps(b, r0, acc[t][0]);
                    acc[t][1] = _mm256_fmadd_ps(b, r1, acc[t][1]);
                }
            }
            for t in 0..NT {
                let q = d[t].add(c);
                _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), acc[t][0]));
                _mm256_storeu_ps(q.add(8), _mm256_add_ps(_mm256_loadu_ps(q.add(8)), acc[t][1]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::{DType, Storage};

    /// Float and quantized weights, token counts around the tile sizes,
    /// column counts with and without a 64-column tail.
    #[test]
    fn matmul_t_equals_the_reference() {
        for (dtype, out, inp) in [(DType::F32, 70, 48), (DType::BF16, 130, 300), (DType::Q8_0, 65, 320), (DType::Q4_K, 129, 512), (DType::Q6_K, 64, 256), (DType::Q5_0, 40, 640), (DType::Q4_0, 33, 96), (DType::Q5_1, 20, 64), (DType::Q4_1, 20, 64), (DType::Q5_K, 9, 512), (DType::Q3_K, 9, 256), (DType::Q2_K, 9, 256)] {
            let vals: Vec<f32> = (0..out * inp).map(|i| (((i * 7919) % 1999) as f32 / 999.5 - 1.0) * 0.3).collect();
            let storage = gemma_quant::convert(Storage::F32(vals), dtype).unwrap();
            let w = Matrix::new(out, inp, storage);
            for n in [1, 2, 5, 7, 31, 33, 49, 70, 101] {
                let dy: Vec<f32> = (0..n * out).map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0).collect();
                let (mut got, mut want) = (vec![1f32; n * inp], vec![0f32; n * inp]);
                matmul_t(&dy, n, &w, &mut got);
                // bf16 weights on AMX-BF16 meet the gradient rounded to bf16.
                #[cfg(target_arch = "x86_64")]
                let dy: Vec<f32> = match dtype == DType::BF16 && crate::gemm_amx::has_amx_bf16() {
                    true => dy.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
                    false => dy,
                };
                matmul_t_ref(&dy, n, &w, &mut want);
                for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                    assert!((g - r).abs() <= 1e-4 * (1.0 + r.abs()), "{dtype:?} n={n} at {i}: {g} vs {r}");
                }
            }
        }
    }
}
