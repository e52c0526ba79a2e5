//! `y = x · Wᵀ` for a weight matrix of any stored dtype, split by rows of W
//! over the rayon pool.

use crate::dot::{dot_bf16, dot_f16, dot_f32};
use gemma_core::{Matrix, Storage};
use rayon::prelude::*;

/// Rows of W handled by one task.
const ROWS_PER_TASK: usize = 16;

/// `y[t, r] = x[t, :] · w[r, :]` with `x: [n, w.cols]`, `y: [n, w.rows]`.
pub fn matmul(x: &[f32], n: usize, w: &Matrix, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    assert_eq!(x.len(), n * cols, "matmul input has the wrong length");
    assert_eq!(y.len(), n * rows, "matmul output has the wrong length");
    if n == 0 || rows == 0 {
        return;
    }
    // yt: [rows, n], so each task owns a contiguous slice of it.
    let mut yt = vec![0f32; rows * n];
    yt.par_chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(|(task, out)| {
        let r0 = task * ROWS_PER_TASK;
        for (i, out_row) in out.chunks_mut(n).enumerate() {
            let r = r0 + i;
            let range = r * cols..(r + 1) * cols;
            for (t, o) in out_row.iter_mut().enumerate() {
                let xt = &x[t * cols..(t + 1) * cols];
                *o = match &w.storage {
                    Storage::F32(v) => dot_f32(xt, &v[range.clone()]),
                    Storage::BF16(v) => dot_bf16(xt, &v[range.clone()]),
                    Storage::F16(v) => dot_f16(xt, &v[range.clone()]),
                };
            }
        }
    });
    for r in 0..rows {
        for t in 0..n {
            y[t * rows + r] = yt[r * n + t];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::DType;

    #[test]
    fn matches_naive_for_every_dtype() {
        let (rows, cols, n) = (37, 29, 3);
        let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let w = Matrix::new(rows, cols, Storage::F32(wv.clone()).convert(dt));
            let mut y = vec![0.0; n * rows];
            matmul(&x, n, &w, &mut y);
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| x[t * cols + c] * dt.round(wv[r * cols + c])).sum();
                    assert!((y[t * rows + r] - want).abs() < 1e-4, "{dt}: {} vs {want}", y[t * rows + r]);
                }
            }
        }
    }
}
