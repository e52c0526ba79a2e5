//! A projection `y = x·Wᵀ + s·B·A·drop(x)` over a frozen base `W` (any
//! stored type) and its backward: the input gradient through `W`
//! ([`gemma_kernels::matmul_t`], no weight gradient) and through the LoRA
//! pair, whose gradients are accumulated.

use crate::real::Real;
use gemma_core::{Matrix, Storage};
use gemma_kernels::gemm_nn::gemm_nn_parallel;
use gemma_kernels::{matmul_t, matmul_train};
use gemma_model::lora::dropout_keep;

/// A trainable LoRA pair and its accumulated gradients.
#[derive(Debug, Clone)]
pub struct LoraParam {
    /// Rank.
    pub r: usize,
    /// Input features.
    pub fin: usize,
    /// Output features.
    pub fout: usize,
    /// `alpha / r` (or `/ √r`).
    pub scale: f32,
    /// `A` `[r, fin]`.
    pub a: Vec<f32>,
    /// `B` `[fout, r]`.
    pub b: Vec<f32>,
    /// Gradient of `A`.
    pub ga: Vec<f32>,
    /// Gradient of `B`.
    pub gb: Vec<f32>,
}

/// `x` with LoRA dropout `(p, seed)` applied (kept elements scaled by `1 / (1 − p)`).
pub fn dropped(x: &[f32], drop: Option<(f32, u64)>) -> Vec<f32> {
    match drop {
        Some((p, seed)) => {
            let keep = 1.0 / (1.0 - p);
            x.iter().enumerate().map(|(i, &v)| if dropout_keep(seed, i, p) { v * keep } else { 0.0 }).collect()
        }
        None => x.to_vec(),
    }
}

/// Reference backward of the LoRA term alone for `y = s·B·A·x` (`x: [n,
/// fin]`, `dy: [n, fout]`): returns `(dx, dA, dB)`.
pub fn lora_backward_ref<T: Real>(x: &[T], a: &[T], b: &[T], r: usize, s: f64, dy: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
    let fin = a.len() / r;
    let fout = b.len() / r;
    let n = x.len() / fin;
    let s = T::of(s);
    let (mut dx, mut da, mut db) = (vec![T::default(); n * fin], vec![T::default(); r * fin], vec![T::default(); fout * r]);
    for t in 0..n {
        let xt = &x[t * fin..(t + 1) * fin];
        let ax: Vec<T> = (0..r).map(|k| a[k * fin..(k + 1) * fin].iter().zip(xt).fold(T::default(), |acc, (&w, &v)| acc + w * v)).collect();
        let mut dt = vec![T::default(); r];
        for o in 0..fout {
            let g = dy[t * fout + o] * s;
            for k in 0..r {
                db[o * r + k] += g * ax[k];
                dt[k] += g * b[o * r + k];
            }
        }
        for k in 0..r {
            for i in 0..fin {
                da[k * fin + i] += dt[k] * xt[i];
                dx[t * fin + i] += dt[k] * a[k * fin + i];
            }
        }
    }
    (dx, da, db)
}

/// The forward of the LoRA term (reference): `y = s·B·A·x`.
pub fn lora_forward_ref<T: Real>(x: &[T], a: &[T], b: &[T], r: usize, s: f64) -> Vec<T> {
    let fin = a.len() / r;
    let fout = b.len() / r;
    let n = x.len() / fin;
    let mut y = vec![T::default(); n * fout];
    for t in 0..n {
        let xt = &x[t * fin..(t + 1) * fin];
        let ax: Vec<T> = (0..r).map(|k| a[k * fin..(k + 1) * fin].iter().zip(xt).fold(T::default(), |acc, (&w, &v)| acc + w * v)).collect();
        for o in 0..fout {
            y[t * fout + o] = T::of(s) * (0..r).fold(T::default(), |acc, k| acc + b[o * r + k] * ax[k]);
        }
    }
    y
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = x[i * cols + j];
        }
    }
    t
}

/// Backward of `y = x·Wᵀ + s·B·A·drop(x)` for `x: [n, fin]`, `dy: [n,
/// fout]`: overwrites `dx` with the input gradient and adds the LoRA
/// gradients to `lora.ga`/`lora.gb`.
pub fn linear_backward(w: &Matrix, lora: Option<&mut LoraParam>, drop: Option<(f32, u64)>, x: &[f32], n: usize, dy: &[f32], dx: &mut [f32]) {
    matmul_t(dy, n, w, dx);
    let Some(l) = lora else { return };
    let (r, fin, fout) = (l.r, l.fin, l.fout);
    // The LoRA input: x itself without dropout (no copy).
    let owned;
    let xd: &[f32] = match drop {
        Some(_) => {
            owned = dropped(x, drop);
            &owned
        }
        None => x,
    };
    let amat = Matrix::new(r, fin, Storage::F32(l.a.clone()));
    let bmat = Matrix::new(fout, r, Storage::F32(l.b.clone()));
    let mut t = vec![0f32; n * r]; // A·xd  [n, r]
    matmul_train(xd, n, &amat, &mut t);
    let mut dt = vec![0f32; n * r]; // s·dy·B  [n, r]
    matmul_t(dy, n, &bmat, &mut dt);
    dt.iter_mut().for_each(|v| *v *= l.scale);
    // dB += s · dyᵀ·t, computed as (tᵀ·dy)ᵀ: only the rank-wide t is
    // transposed, never the [n, fout] gradient.
    let mut dbt = vec![0f32; r * fout]; // [r, fout]
    gemm_nn_parallel(&transpose(&t, n, r), r, n, dy, fout, &mut dbt);
    for (o, g) in l.gb.chunks_exact_mut(r).enumerate() {
        g.iter_mut().enumerate().for_each(|(k, g)| *g += l.scale * dbt[k * fout + o]);
    }
    // dA += dtᵀ·xd  [r, fin]
    let mut tmp = vec![0f32; r * fin];
    gemm_nn_parallel(&transpose(&dt, n, r), r, n, xd, fin, &mut tmp);
    l.ga.iter_mut().zip(&tmp).for_each(|(g, v)| *g += v);
    let mut dxd = vec![0f32; n * fin];
    matmul_t(&dt, n, &amat, &mut dxd);
    // dx += drop'(dxd)
    match drop {
        Some((p, seed)) => {
            let keep = 1.0 / (1.0 - p);
            for (i, (d, v)) in dx.iter_mut().zip(&dxd).enumerate() {
                if dropout_keep(seed, i, p) {
                    *d += v * keep;
                }
            }
        }
        None => dx.iter_mut().zip(&dxd).for_each(|(d, v)| *d += v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};

    #[test]
    fn lora_backward_matches_finite_differences_and_the_fast_path() {
        let (n, fin, fout, r, s) = (5, 6, 7, 3, 1.7);
        let x: Vec<f64> = (0..n * fin).map(|i| val(i, 31)).collect();
        let a: Vec<f64> = (0..r * fin).map(|i| val(i, 32)).collect();
        let b: Vec<f64> = (0..fout * r).map(|i| val(i, 33)).collect();
        let dy: Vec<f64> = (0..n * fout).map(|i| val(i, 34)).collect();
        let (dx, da, db) = lora_backward_ref(&x, &a, &b, r, s, &dy);
        let loss = |x: &[f64], a: &[f64], b: &[f64]| lora_forward_ref(x, a, b, r, s).iter().zip(&dy).map(|(p, q)| p * q).sum::<f64>();
        finite_diff("lora/x", &x, &dx, &|v| loss(v, &a, &b));
        finite_diff("lora/A", &a, &da, &|v| loss(&x, v, &b));
        finite_diff("lora/B", &b, &db, &|v| loss(&x, &a, v));

        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let w = Matrix::new(fout, fin, Storage::F32((0..fout * fin).map(|i| val(i, 35) as f32).collect()));
        let mut p = LoraParam { r, fin, fout, scale: s as f32, a: f(&a), b: f(&b), ga: vec![0.0; r * fin], gb: vec![0.0; fout * r] };
        let mut dx32 = vec![0f32; n * fin];
        linear_backward(&w, Some(&mut p), None, &f(&x), n, &f(&dy), &mut dx32);
        let mut base = vec![0f32; n * fin];
        gemma_kernels::matmul_t::matmul_t_ref(&f(&dy), n, &w, &mut base);
        let close = |a: &[f32], b: &[f64], what: &str| {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((*x as f64 - y).abs() < 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
            }
        };
        let want_dx: Vec<f64> = dx.iter().zip(&base).map(|(a, b)| a + *b as f64).collect();
        close(&dx32, &want_dx, "dx");
        close(&p.ga, &da, "dA");
        close(&p.gb, &db, "dB");
    }
}
