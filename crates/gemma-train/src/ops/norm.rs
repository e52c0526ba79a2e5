//! RMSNorm with a `1 + w` gain (already folded by the loader): forward and
//! the input gradient (the gain is frozen).

use crate::real::Real;

/// `y = x / √(mean(x²) + eps) · g` per row of `g.len()` values.
pub fn rms_norm<T: Real>(x: &[T], g: &[T], eps: f64, y: &mut [T]) {
    let d = g.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let r = inv_rms(xr, eps);
        for ((o, &v), &gi) in yr.iter_mut().zip(xr).zip(g) {
            *o = v * r * gi;
        }
    }
}

/// `1 / √(mean(x²) + eps)`, the mean summed in f64 as the forward does.
fn inv_rms<T: Real>(x: &[T], eps: f64) -> T {
    let ms = x.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / x.len() as f64;
    T::of(1.0 / (ms + eps).sqrt())
}

/// `dx` of [`rms_norm`] given `dy` (overwrites `dx`):
/// `dx_i = r·g_i·dy_i − x_i·r³/d · Σ_j dy_j·g_j·x_j`.
pub fn rms_norm_backward<T: Real>(x: &[T], g: &[T], eps: f64, dy: &[T], dx: &mut [T]) {
    let d = g.len();
    // Rows are independent: 16 rows a task.
    gemma_kernels::pool::parallel_chunks(dx, 16 * d, &|r, dx| {
        for ((xr, dyr), dxr) in x[r.clone()].chunks_exact(d).zip(dy[r.clone()].chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let r = inv_rms(xr, eps);
            let dot = xr.iter().zip(dyr).zip(g).map(|((x, dy), g)| (*x * *dy * *g).f64()).sum::<f64>();
            let c = T::of(dot / d as f64) * r * r * r;
            for (((o, &x), &dy), &gi) in dxr.iter_mut().zip(xr).zip(dyr).zip(g) {
                *o = r * gi * dy - x * c;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};

    #[test]
    fn rms_norm_backward_matches_finite_differences_and_f32() {
        let (d, n, eps) = (12, 3, 1e-6);
        let x: Vec<f64> = (0..n * d).map(|i| val(i, 1) * 2.0).collect();
        let g: Vec<f64> = (0..d).map(|i| 1.0 + val(i, 2)).collect();
        let dy: Vec<f64> = (0..n * d).map(|i| val(i, 3)).collect();
        let mut dx = vec![0.0; n * d];
        rms_norm_backward(&x, &g, eps, &dy, &mut dx);
        let loss = |x: &[f64]| {
            let mut y = vec![0.0; n * d];
            rms_norm(x, &g, eps, &mut y);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum()
        };
        finite_diff("rms_norm", &x, &dx, &loss);
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let mut dx32 = vec![0f32; n * d];
        rms_norm_backward(&f(&x), &f(&g), eps, &f(&dy), &mut dx32);
        for (a, b) in dx32.iter().zip(&dx) {
            assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()));
        }
    }
}
