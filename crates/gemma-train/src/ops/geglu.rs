//! GeGLU with tanh-GELU: `act = gelu(gate) · up`, and its backward.

use crate::real::Real;

const K: f64 = 0.797_884_560_802_865_4; // √(2/π)
const C: f64 = 0.044715;

/// tanh-GELU.
pub fn gelu<T: Real>(x: T) -> T {
    let (k, c, half, one) = (T::of(K), T::of(C), T::of(0.5), T::of(1.0));
    half * x * (one + (k * (x + c * x * x * x)).tanh())
}

/// d gelu / dx.
pub fn gelu_grad<T: Real>(x: T) -> T {
    let (k, c, half, one) = (T::of(K), T::of(C), T::of(0.5), T::of(1.0));
    let t = (k * (x + c * x * x * x)).tanh();
    half * (one + t) + half * x * (one - t * t) * k * (one + T::of(3.0) * c * x * x)
}

/// `act = gelu(gate) · up` element-wise.
pub fn geglu<T: Real>(gate: &[T], up: &[T], act: &mut [T]) {
    for ((a, &g), &u) in act.iter_mut().zip(gate).zip(up) {
        *a = gelu(g) * u;
    }
}

/// Gradients of [`geglu`]: `dgate = dact · up · gelu'(gate)`, `dup = dact · gelu(gate)`.
pub fn geglu_backward<T: Real>(gate: &[T], up: &[T], dact: &[T], dgate: &mut [T], dup: &mut [T]) {
    for i in 0..gate.len() {
        dgate[i] = dact[i] * up[i] * gelu_grad(gate[i]);
        dup[i] = dact[i] * gelu(gate[i]);
    }
}

/// [`geglu_backward`] in f32 with the SIMD kernel, on all threads (the
/// training step's path; the generic one is its f64-checked reference).
pub fn geglu_backward_f32(gate: &[f32], up: &[f32], dact: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    assert_eq!(dup.len(), dgate.len(), "geglu_backward: lengths differ");
    let du = gemma_kernels::pool::Disjoint::new(dup);
    gemma_kernels::pool::parallel_chunks(dgate, 16384, &|r, dg| {
        // SAFETY: this task alone owns range r of dup (the same range as its part of dgate).
        let du = unsafe { du.range(r.clone()) };
        gemma_kernels::geglu::geglu_backward(&gate[r.clone()], &up[r.clone()], &dact[r], dg, du);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};

    #[test]
    fn geglu_backward_matches_finite_differences() {
        let n = 20;
        let gate: Vec<f64> = (0..n).map(|i| val(i, 6) * 4.0).collect();
        let up: Vec<f64> = (0..n).map(|i| val(i, 7) * 2.0).collect();
        let d: Vec<f64> = (0..n).map(|i| val(i, 8)).collect();
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        geglu_backward(&gate, &up, &d, &mut dg, &mut du);
        let loss_g = |g: &[f64]| {
            let mut a = vec![0.0; n];
            geglu(g, &up, &mut a);
            a.iter().zip(&d).map(|(a, b)| a * b).sum()
        };
        finite_diff("geglu/gate", &gate, &dg, &loss_g);
        let loss_u = |u: &[f64]| {
            let mut a = vec![0.0; n];
            geglu(&gate, u, &mut a);
            a.iter().zip(&d).map(|(a, b)| a * b).sum()
        };
        finite_diff("geglu/up", &up, &du, &loss_u);
        // The parallel SIMD f32 path equals the generic f32 instance.
        let n2 = 40_000;
        let g32: Vec<f32> = (0..n2).map(|i| (val(i, 9) * 8.0) as f32).collect();
        let u32v: Vec<f32> = (0..n2).map(|i| val(i, 10) as f32).collect();
        let d32: Vec<f32> = (0..n2).map(|i| val(i, 11) as f32).collect();
        let (mut a1, mut b1, mut a2, mut b2) = (vec![0f32; n2], vec![0f32; n2], vec![0f32; n2], vec![0f32; n2]);
        geglu_backward(&g32, &u32v, &d32, &mut a1, &mut b1);
        geglu_backward_f32(&g32, &u32v, &d32, &mut a2, &mut b2);
        for i in 0..n2 {
            assert!((a1[i] - a2[i]).abs() <= 2e-6 * (1.0 + a1[i].abs()) && (b1[i] - b2[i]).abs() <= 2e-6 * (1.0 + b1[i].abs()), "at {i}");
        }
        // The f32 instance equals the kernels' forward GELU.
        for &g in &gate {
            let (a, b) = (gelu(g as f32), gemma_kernels::gelu_tanh(g as f32));
            assert!((a - b).abs() < 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
