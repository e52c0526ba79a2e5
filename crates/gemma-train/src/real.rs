//! The float type of a backward op: `f64` for the references that finite
//! differences check, `f32` for training. Each op is written once, generic
//! over this trait, so the reference and the fast path cannot drift apart.

use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// `f32` or `f64`.
pub trait Real:
    Copy
    + Default
    + PartialOrd
    + Send
    + Sync
    + std::fmt::Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    /// From an f64 constant.
    fn of(v: f64) -> Self;
    /// As f64.
    fn f64(self) -> f64;
    /// e^x.
    fn exp(self) -> Self;
    /// tanh(x).
    fn tanh(self) -> Self;
    /// √x.
    fn sqrt(self) -> Self;
    /// `a · b` (SIMD for f32).
    fn dot(a: &[Self], b: &[Self]) -> Self;
    /// `y += a · x` (SIMD for f32).
    fn axpy(a: Self, x: &[Self], y: &mut [Self]);
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn tanh(self) -> Self {
        f32::tanh(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn dot(a: &[Self], b: &[Self]) -> Self {
        gemma_kernels::dot::dot_f32(a, b)
    }
    fn axpy(a: Self, x: &[Self], y: &mut [Self]) {
        gemma_kernels::dot::axpy_f32_fma(a, x, y)
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn dot(a: &[Self], b: &[Self]) -> Self {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
    fn axpy(a: Self, x: &[Self], y: &mut [Self]) {
        y.iter_mut().zip(x).for_each(|(o, v)| *o += a * v);
    }
}

#[cfg(test)]
pub(crate) mod check {
    //! Finite-difference checking of the f64 references.

    /// A deterministic value in [-1, 1) for index `i` and `salt`.
    pub fn val(i: usize, salt: usize) -> f64 {
        (((i.wrapping_mul(7919) ^ salt.wrapping_mul(104_729)) % 2003) as f64) / 1001.5 - 1.0
    }

    /// Checks `grad` (the analytic gradient of `f` at `x`) against central
    /// differences, element by element.
    pub fn finite_diff(name: &str, x: &[f64], grad: &[f64], f: &dyn Fn(&[f64]) -> f64) {
        let h = 1e-5;
        let mut xp = x.to_vec();
        for i in 0..x.len() {
            xp[i] = x[i] + h;
            let up = f(&xp);
            xp[i] = x[i] - h;
            let down = f(&xp);
            xp[i] = x[i];
            let num = (up - down) / (2.0 * h);
            assert!((num - grad[i]).abs() <= 1e-6 + 1e-5 * num.abs(), "{name}: d/dx[{i}] analytic {} vs numeric {num}", grad[i]);
        }
    }
}
