//! Gemma 4's per-layer input, `y = norm(proj(gelu(gate·x) ⊙ e))` added to
//! the residual, backwards through its frozen weights: the input gradient
//! `dx += J_yᵀ·dy`. The generic version is the reference (f64-checked by
//! finite differences); [`ple_backward`] is what training runs, on the
//! loaded weights and the activations the forward recorded.

use super::geglu::{geglu, geglu_backward, geglu_backward_f32};
use super::linear::linear_backward;
use super::norm::{rms_norm, rms_norm_backward};
use crate::real::Real;
use gemma_model::weights::PleLayerWeights;
use gemma_model::LayerTape;

/// `y[n, h] = a[n, k] · wᵀ` for `w` `[m, k]` row-major (`m` = `y.len() / n`).
fn matmul_ref<T: Real>(a: &[T], w: &[T], k: usize, y: &mut [T]) {
    let m = w.len() / k;
    for (ar, yr) in a.chunks_exact(k).zip(y.chunks_exact_mut(m)) {
        for (o, wr) in yr.iter_mut().zip(w.chunks_exact(k)) {
            *o = ar.iter().zip(wr).fold(T::of(0.0), |s, (&x, &v)| s + x * v);
        }
    }
}

/// `dx[n, k] = dy[n, m] · w` for `w` `[m, k]`.
fn matmul_t_ref<T: Real>(dy: &[T], w: &[T], k: usize, dx: &mut [T]) {
    let m = w.len() / k;
    for (dyr, dxr) in dy.chunks_exact(m).zip(dx.chunks_exact_mut(k)) {
        dxr.iter_mut().for_each(|v| *v = T::of(0.0));
        for (&d, wr) in dyr.iter().zip(w.chunks_exact(k)) {
            dxr.iter_mut().zip(wr).for_each(|(o, &v)| *o += d * v);
        }
    }
}

/// The forward's intermediates: `a = gate·x` `[n, p]`, `u = gelu(a) ⊙ e`
/// `[n, p]`, `z = proj·u` `[n, h]`.
fn intermediates<T: Real>(x: &[T], gate: &[T], e: &[T], proj: &[T], h: usize) -> (Vec<T>, Vec<T>) {
    let n = x.len() / h;
    let p = e.len() / n;
    let mut a = vec![T::of(0.0); n * p];
    matmul_ref(x, gate, h, &mut a);
    let mut u = vec![T::of(0.0); n * p];
    geglu(&a, e, &mut u);
    let mut z = vec![T::of(0.0); n * h];
    matmul_ref(&u, proj, p, &mut z);
    (a, z)
}

/// The per-layer delta `y` `[n, h]` of rows `x` `[n, h]`: gate `[p, h]`,
/// per-layer inputs `e` `[n, p]`, projection `[h, p]`, norm gain `g` `[h]`.
pub fn ple_delta<T: Real>(x: &[T], gate: &[T], e: &[T], proj: &[T], g: &[T], eps: f64) -> Vec<T> {
    let (_, z) = intermediates(x, gate, e, proj, g.len());
    let mut y = vec![T::of(0.0); z.len()];
    rms_norm(&z, g, eps, &mut y);
    y
}

/// `J_yᵀ·dy` of [`ple_delta`] with respect to `x` (the reference backward).
pub fn ple_delta_backward<T: Real>(x: &[T], gate: &[T], e: &[T], proj: &[T], g: &[T], eps: f64, dy: &[T]) -> Vec<T> {
    let h = g.len();
    let (n, p) = (x.len() / h, e.len() / (x.len() / h));
    let (a, z) = intermediates(x, gate, e, proj, h);
    let mut dz = vec![T::of(0.0); n * h];
    rms_norm_backward(&z, g, eps, dy, &mut dz);
    let mut du = vec![T::of(0.0); n * p];
    matmul_t_ref(&dz, proj, p, &mut du);
    let (mut da, mut de) = (vec![T::of(0.0); n * p], vec![T::of(0.0); n * p]);
    geglu_backward(&a, e, &du, &mut da, &mut de);
    let mut dx = vec![T::of(0.0); n * h];
    matmul_t_ref(&da, gate, h, &mut dx);
    dx
}

/// Training's path: adds the per-layer delta's input gradient to `dx`
/// (which holds the gradient of `x + y`), from the activations in `t`
/// (`ple_gate` = `gate·x`, `ple_e`, `ple_z` = the projection before its norm).
pub fn ple_backward(w: &PleLayerWeights, t: &LayerTape, eps: f64, dx: &mut [f32]) {
    let d = ple_input_grad(w, t, eps, dx);
    dx.iter_mut().zip(&d).for_each(|(x, v)| *x += v);
}

/// `J_yᵀ · dy`: the per-layer delta's input gradient alone.
pub fn ple_input_grad(w: &PleLayerWeights, t: &LayerTape, eps: f64, dy: &[f32]) -> Vec<f32> {
    let hidden = w.norm.len();
    let n = dy.len() / hidden;
    let p = w.gate.rows;
    let mut dz = vec![0f32; n * hidden];
    rms_norm_backward(&t.ple_z, &w.norm, eps, dy, &mut dz);
    let mut du = vec![0f32; n * p];
    linear_backward(&w.proj, None, None, &[], n, &dz, &mut du);
    let (mut da, mut de) = (vec![0f32; n * p], vec![0f32; n * p]);
    geglu_backward_f32(&t.ple_gate, &t.ple_e, &du, &mut da, &mut de);
    let mut d = vec![0f32; n * hidden];
    linear_backward(&w.gate, None, None, &[], n, &da, &mut d);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};
    use gemma_core::{Matrix, Storage};

    const EPS: f64 = 1e-6;

    #[allow(clippy::type_complexity)]
    fn case() -> (usize, usize, usize, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (n, h, p) = (3, 8, 4);
        let x: Vec<f64> = (0..n * h).map(|i| val(i, 11) * 2.0).collect();
        let gate: Vec<f64> = (0..p * h).map(|i| val(i, 12) * 0.7).collect();
        let e: Vec<f64> = (0..n * p).map(|i| val(i, 13)).collect();
        let proj: Vec<f64> = (0..h * p).map(|i| val(i, 14) * 0.7).collect();
        let g: Vec<f64> = (0..h).map(|i| 1.0 + val(i, 15) * 0.3).collect();
        let dy: Vec<f64> = (0..n * h).map(|i| val(i, 16)).collect();
        (n, h, p, x, gate, e, proj, g, dy)
    }

    #[test]
    fn ple_backward_matches_finite_differences() {
        let (_, _, _, x, gate, e, proj, g, dy) = case();
        let dx = ple_delta_backward(&x, &gate, &e, &proj, &g, EPS, &dy);
        let loss = |x: &[f64]| ple_delta(x, &gate, &e, &proj, &g, EPS).iter().zip(&dy).map(|(a, b)| a * b).sum();
        finite_diff("ple", &x, &dx, &loss);
    }

    /// Training's f32 path on loaded weights equals the reference.
    #[test]
    fn ple_backward_f32_equals_the_reference() {
        let (_, h, p, x, gate, e, proj, g, dy) = case();
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let want = ple_delta_backward(&f(&x), &f(&gate), &f(&e), &f(&proj), &f(&g), EPS, &f(&dy));
        let w = PleLayerWeights { gate: Matrix::new(p, h, Storage::F32(f(&gate))), proj: Matrix::new(h, p, Storage::F32(f(&proj))), norm: f(&g) };
        let (a, z) = intermediates(&f(&x), &f(&gate), &f(&e), &f(&proj), h);
        let t = LayerTape { ple_gate: a, ple_e: f(&e), ple_z: z, ..LayerTape::default() };
        // The residual's own gradient passes through: dx = dy + J_yᵀ·dy.
        let mut dx = f(&dy);
        ple_backward(&w, &t, EPS, &mut dx);
        for ((got, want), d) in dx.iter().zip(&want).zip(f(&dy)) {
            assert!((got - d - want).abs() < 1e-5, "{} vs {}", got - d, want);
        }
    }
}
