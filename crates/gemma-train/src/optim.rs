//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay, bias
//! correction, `eps` added after the square root), transformers'
//! learning-rate schedules with warmup, and global-norm gradient clipping
//! as `torch.nn.utils.clip_grad_norm_`.

use crate::adapter::TrainableLora;

/// Learning-rate schedule (transformers' `get_*_schedule_with_warmup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Linear decay to 0 at the last step.
    Linear,
    /// Half a cosine down to 0.
    Cosine,
    /// Constant after warmup.
    Constant,
}

impl Schedule {
    /// Parse `linear`, `cosine` or `constant`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "linear" => Some(Self::Linear),
            "cosine" => Some(Self::Cosine),
            "constant" | "constant_with_warmup" => Some(Self::Constant),
            _ => None,
        }
    }

    /// The multiplier of the base rate at optimizer step `step` (0-based)
    /// of `total`, after `warmup` steps of linear warmup from 0.
    pub fn factor(self, step: usize, warmup: usize, total: usize) -> f64 {
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        match self {
            Self::Linear => ((total as f64 - step as f64) / (total.saturating_sub(warmup)).max(1) as f64).max(0.0),
            Self::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
            Self::Constant => 1.0,
        }
    }
}

/// AdamW settings.
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// First and second moments of every parameter, in [`TrainableLora::params`] order (A then B).
#[derive(Debug, Clone, Default)]
pub struct AdamState {
    /// Steps taken.
    pub step: u64,
    /// First moments.
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
}

impl AdamState {
    /// Zero moments shaped for `lora`.
    pub fn new(lora: &TrainableLora) -> Self {
        let shapes: Vec<usize> = lora.params().flat_map(|p| [p.a.len(), p.b.len()]).collect();
        Self { step: 0, m: shapes.iter().map(|&n| vec![0.0; n]).collect(), v: shapes.iter().map(|&n| vec![0.0; n]).collect() }
    }
}

impl AdamW {
    /// One update of every parameter with learning rate `lr` from its gradient.
    pub fn step(&self, lora: &mut TrainableLora, state: &mut AdamState, lr: f64) {
        state.step += 1;
        let t = state.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let mut k = 0;
        for p in lora.params_mut() {
            for (w, g) in [(&mut p.a, &p.ga), (&mut p.b, &p.gb)] {
                let (m, v) = (&mut state.m[k], &mut state.v[k]);
                for i in 0..w.len() {
                    w[i] *= decay;
                    m[i] = m[i] * b1 + g[i] * (1.0 - b1);
                    v[i] = v[i] * b2 + g[i] * g[i] * (1.0 - b2);
                    let denom = v[i].sqrt() / bc2_sqrt + eps;
                    w[i] -= step_size * m[i] / denom;
                }
                k += 1;
            }
        }
    }
}

/// The global L2 norm of all gradients (before clipping); scales them down
/// to `max_norm` when above it (factor `max_norm / (norm + 1e-6)`, as torch).
pub fn clip_grad_norm(lora: &mut TrainableLora, max_norm: f64) -> f64 {
    let sq: f64 = lora.params().map(|p| p.ga.iter().chain(&p.gb).map(|&g| (g as f64) * (g as f64)).sum::<f64>()).sum();
    let norm = sq.sqrt();
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let c = coef as f32;
            for p in lora.params_mut() {
                p.ga.iter_mut().chain(p.gb.iter_mut()).for_each(|g| *g *= c);
            }
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' schedules at a few steps (values from their formulas).
    #[test]
    fn schedules_follow_transformers() {
        assert_eq!(Schedule::Linear.factor(0, 3, 10), 0.0);
        assert!((Schedule::Linear.factor(1, 3, 10) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(Schedule::Linear.factor(3, 3, 10), 1.0);
        assert!((Schedule::Linear.factor(5, 3, 10) - 5.0 / 7.0).abs() < 1e-12);
        assert_eq!(Schedule::Linear.factor(0, 0, 10), 1.0);
        assert!((Schedule::Cosine.factor(6, 2, 10) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule::Constant.factor(9, 2, 10), 1.0);
    }
}
