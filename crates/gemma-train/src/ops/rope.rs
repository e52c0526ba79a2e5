//! RoPE (halves rotated as in transformers' `rotate_half`): the backward of
//! a rotation by θ is the rotation by −θ.

use crate::real::Real;

/// Rotate one head (`[hd]`, pairs `(i, i + hd/2)`) by the angles whose
/// cosines and sines are `cos`, `sin` (`[hd/2]`).
pub fn rope<T: Real>(head: &mut [T], cos: &[T], sin: &[T]) {
    let half = cos.len();
    let (lo, hi) = head.split_at_mut(half);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (x, y) = (*a, *b);
        *a = x * c - y * s;
        *b = y * c + x * s;
    }
}

/// The gradient through [`rope`], in place on `d` (`[hd]`).
pub fn rope_backward<T: Real>(d: &mut [T], cos: &[T], sin: &[T]) {
    let half = cos.len();
    let (lo, hi) = d.split_at_mut(half);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (x, y) = (*a, *b);
        *a = x * c + y * s;
        *b = y * c - x * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::check::{finite_diff, val};

    #[test]
    fn rope_backward_matches_finite_differences() {
        let hd = 8;
        let ang: Vec<f64> = (0..hd / 2).map(|i| 0.3 + i as f64 * 0.7).collect();
        let (cos, sin): (Vec<f64>, Vec<f64>) = ang.iter().map(|a| (a.cos(), a.sin())).unzip();
        let x: Vec<f64> = (0..hd).map(|i| val(i, 4)).collect();
        let dy: Vec<f64> = (0..hd).map(|i| val(i, 5)).collect();
        let mut dx = dy.clone();
        rope_backward(&mut dx, &cos, &sin);
        let loss = |x: &[f64]| {
            let mut y = x.to_vec();
            rope(&mut y, &cos, &sin);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum()
        };
        finite_diff("rope", &x, &dx, &loss);
    }
}
