//! The output head and cross-entropy, fused and chunked over labeled rows:
//! [`CE_ROWS`] rows of logits (`rows × vocab` floats) exist at a time,
//! never `tokens × vocab`. Forward: logits = h·Eᵀ (f32 activations, the
//! head dequantized on the fly; a bf16 head with bf16 activations on
//! AMX-BF16, `matmul_train`),
//! optional final
//! soft-cap, log-sum-exp in f64; backward: `dz = softmax − onehot` (times
//! `1 − (z/cap)²`), `dh = dz·E` through the frozen head.

use crate::real::Real;
use gemma_core::Matrix;
use gemma_kernels::{matmul_t, matmul_train, pool};

/// Rows of logits computed at once.
pub const CE_ROWS: usize = 128;

/// Loss of one row of raw logits for `target`, and (into `dz`) its
/// gradient with respect to the raw logits.
pub fn cross_entropy_row<T: Real>(logits: &[T], target: usize, cap: Option<f64>, dz: &mut [T]) -> f64 {
    let z: Vec<f64> = logits.iter().map(|v| cap.map_or(v.f64(), |c| c * (v.f64() / c).tanh())).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
    let lse = m + sum.ln();
    for (i, (d, &zi)) in dz.iter_mut().zip(&z).enumerate() {
        let mut g = (zi - lse).exp() - if i == target { 1.0 } else { 0.0 };
        if let Some(c) = cap {
            let t = zi / c;
            g *= 1.0 - t * t;
        }
        *d = T::of(g);
    }
    lse - z[target]
}

/// For rows `h: [m, hidden]` (after the final norm) and their targets:
/// returns `Σ weight · loss_i` and the per-row losses, and overwrites
/// `dh` with the gradient of that sum.
pub fn head_cross_entropy(h: &[f32], targets: &[u32], weight: f32, head: &Matrix, cap: Option<f32>, dh: &mut [f32]) -> (f64, Vec<f64>) {
    let (hidden, vocab) = (head.cols, head.rows);
    let m = targets.len();
    assert_eq!(h.len(), m * hidden, "head_cross_entropy: h is not [m, hidden]");
    LOGITS.with(|buf| {
        let logits = &mut *buf.borrow_mut();
        // Reused across micro-batches (up to 128 × 262,144 floats): the
        // product overwrites every element it is given, so no clearing.
        if logits.len() < CE_ROWS.min(m) * vocab {
            logits.resize(CE_ROWS.min(m) * vocab, 0.0);
        }
        head_ce_chunks(h, targets, weight, head, cap, dh, logits)
    })
}

thread_local! {
    /// The logits of one chunk of rows, kept between calls.
    static LOGITS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`head_cross_entropy`] with a logits buffer of at least `CE_ROWS.min(m) × vocab`.
fn head_ce_chunks(h: &[f32], targets: &[u32], weight: f32, head: &Matrix, cap: Option<f32>, dh: &mut [f32], logits: &mut [f32]) -> (f64, Vec<f64>) {
    let (hidden, vocab) = (head.cols, head.rows);
    let m = targets.len();
    let mut losses = vec![0f64; m];
    let mut total = 0f64;
    for r0 in (0..m).step_by(CE_ROWS) {
        let rows = CE_ROWS.min(m - r0);
        let lg = &mut logits[..rows * vocab];
        matmul_train(&h[r0 * hidden..(r0 + rows) * hidden], rows, head, lg);
        let lossp = pool::Disjoint::new(&mut losses[r0..r0 + rows]);
        pool::parallel_chunks(lg, vocab, &|r, row| {
            let i = r.start / vocab;
            // SAFETY: loss i belongs to the task of row i alone.
            unsafe { lossp.range(i..i + 1)[0] = row_loss(row, targets[r0 + i] as usize, cap, weight) };
        });
        matmul_t(lg, rows, head, &mut dh[r0 * hidden..(r0 + rows) * hidden]);
        total += losses[r0..r0 + rows].iter().sum::<f64>() * weight as f64;
    }
    (total, losses)
}

/// [`cross_entropy_row`] in place on an f32 row (the row becomes `weight · dz`).
fn row_loss(row: &mut [f32], target: usize, cap: Option<f32>, weight: f32) -> f64 {
    if cap.is_none() {
        // softmax = e^(z − m) / Σ: one SIMD exponential per logit.
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let zt = row[target];
        let sum = gemma_kernels::geglu::exp_shifted(row, m);
        let inv = (1.0 / sum) as f32 * weight;
        row.iter_mut().for_each(|v| *v *= inv);
        row[target] -= weight;
        return m as f64 + sum.ln() - zt as f64;
    }
    if let Some(c) = cap {
        row.iter_mut().for_each(|v| *v = c * (*v / c).tanh());
    }
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
    let lse = m as f64 + sum.ln();
    let loss = lse - row[target] as f64;
    for (i, v) in row.iter_mut().enumerate() {
        let z = *v;
        let mut g = ((z as f64 - lse).exp() - if i == target { 1.0 } else { 0.0 }) as f32;
        if let Some(c) = cap {
            let t = z / c;
            g *= 1.0 - t * t;
        }
        *v = g * weight;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};
    use gemma_core::Storage;

    #[test]
    fn cross_entropy_matches_finite_differences_and_the_fused_head() {
        for cap in [None, Some(2.0)] {
            let logits: Vec<f64> = (0..11).map(|i| val(i, 41) * 3.0).collect();
            let mut dz = vec![0.0; 11];
            cross_entropy_row(&logits, 4, cap, &mut dz);
            finite_diff("cross_entropy", &logits, &dz, &|z| cross_entropy_row(z, 4, cap, &mut [0.0; 11]));
        }
        // Fused head over more rows than one chunk, with and without the
        // final soft-cap: equals the per-row definition.
        for cap in [None, Some(1.5f32)] {
            let (m, hidden, vocab) = (CE_ROWS + 5, 8, 13);
            let e: Vec<f32> = (0..vocab * hidden).map(|i| val(i, 42) as f32).collect();
            let head = Matrix::new(vocab, hidden, Storage::F32(e.clone()));
            let h: Vec<f32> = (0..m * hidden).map(|i| val(i, 43) as f32 * 2.0).collect();
            let targets: Vec<u32> = (0..m as u32).map(|i| (i * 5) % vocab as u32).collect();
            let mut dh = vec![0f32; m * hidden];
            let (total, _) = head_cross_entropy(&h, &targets, 0.5, &head, cap, &mut dh);
            let mut want_total = 0.0;
            for i in 0..m {
                let z: Vec<f64> = (0..vocab).map(|v| (0..hidden).map(|c| h[i * hidden + c] as f64 * e[v * hidden + c] as f64).sum()).collect();
                let mut dz = vec![0.0; vocab];
                want_total += 0.5 * cross_entropy_row(&z, targets[i] as usize, cap.map(f64::from), &mut dz);
                for c in 0..hidden {
                    let want: f64 = (0..vocab).map(|v| 0.5 * dz[v] * e[v * hidden + c] as f64).sum();
                    assert!((dh[i * hidden + c] as f64 - want).abs() < 1e-5, "dh[{i},{c}]");
                }
            }
            assert!((total - want_total).abs() < 1e-4 * want_total.abs());
        }
    }
}
