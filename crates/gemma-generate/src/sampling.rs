//! Sampling, in the order transformers applies it: temperature, top-k,
//! top-p, min-p, then a seeded draw. Penalties are logits processors
//! (`processors.rs`) that run before it.

use crate::rng::Rng;
use gemma_core::{GemmaError, Result};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Penalize tokens already in the context (> 1 discourages); 1 disables.
    pub repetition_penalty: f32,
    /// Seed of the random draw.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Check every value is in range.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(GemmaError::invalid("temperature", format!("must be a finite number >= 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(GemmaError::invalid("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        if !(self.min_p >= 0.0 && self.min_p < 1.0) {
            return Err(GemmaError::invalid("min_p", format!("must be in [0, 1), got {}", self.min_p)));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(GemmaError::invalid("repetition_penalty", format!("must be a finite number > 0, got {}", self.repetition_penalty)));
        }
        Ok(())
    }

    /// True when the choice is deterministic argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// True when forbidding tokens cannot change how the others are drawn:
    /// greedy, or plain temperature sampling (no top-k/top-p/min-p cut,
    /// whose candidate set depends on which tokens remain). Then a draw
    /// from the unfiltered logits that lands on an allowed token is a draw
    /// from the filtered distribution (the argmax of the allowed set;
    /// rejection sampling), so a grammar's full mask can be skipped.
    pub fn filter_commutes(&self) -> bool {
        self.is_greedy() || (self.top_k == 0 && self.top_p >= 1.0 && self.min_p == 0.0)
    }
}

/// Chooses tokens from logits; owns the seeded random stream and the
/// candidate buffers (reused, so a draw allocates nothing once warm).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    idx: Vec<u32>,
    probs: Vec<f64>,
}

/// Index of the largest value (first one on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// A sampler with validated parameters.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Self { params, rng, idx: Vec::new(), probs: Vec::new() })
    }

    /// The parameters in use.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Pick the next token from `logits` (`[vocab]`, penalties already applied).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let keep = self.candidates(logits);
        let probs = &self.probs;
        let mass: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * mass;
        for (i, &x) in probs[..keep].iter().enumerate() {
            r -= x;
            if r < 0.0 {
                return self.idx[i];
            }
        }
        self.idx[keep - 1]
    }

    /// The distribution [`Sampler::sample`] draws from for `logits`:
    /// `(id, probability)` of every token it can choose, most likely first,
    /// summing to 1 (greedy: the argmax, certain). Draws nothing.
    pub fn distribution(&mut self, logits: &[f32]) -> Vec<(u32, f64)> {
        if self.params.is_greedy() {
            return vec![(argmax(logits), 1.0)];
        }
        let keep = self.candidates(logits);
        let mass: f64 = self.probs[..keep].iter().sum();
        self.idx[..keep].iter().zip(&self.probs[..keep]).map(|(&i, &p)| (i, p / mass)).collect()
    }

    /// Sort the candidates into `idx` (best first; the top-k cut before
    /// sorting) with their probabilities under the temperature in `probs`,
    /// and return how many the top-p and min-p cuts keep.
    fn candidates(&mut self, logits: &[f32]) -> usize {
        let p = &self.params;
        let idx = &mut self.idx;
        idx.clear();
        idx.extend(0..logits.len() as u32);
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.select_nth_unstable_by(p.top_k - 1, by_logit);
            idx.truncate(p.top_k);
        }
        idx.sort_unstable_by(by_logit);
        let inv_t = 1.0 / p.temperature as f64;
        let max = logits[idx[0] as usize] as f64 * inv_t;
        let probs = &mut self.probs;
        probs.clear();
        probs.extend(idx.iter().map(|&i| (logits[i as usize] as f64 * inv_t - max).exp()));
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, &x) in probs.iter().enumerate() {
                cum += x;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&x| x >= floor).count().max(1));
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams { temperature: t, seed: 7, ..Default::default() }
    }

    /// The handed-out distribution is what the draws follow: the top-p and
    /// min-p cuts, renormalized, and 20k draws within 1% of it.
    #[test]
    fn distribution_is_what_sample_draws_from() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, top_p: 0.95, seed: 3, ..Default::default() }).unwrap();
        let d = s.distribution(&logits);
        let ids: Vec<u32> = d.iter().map(|x| x.0).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert!((d.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-12);
        let e = [2.0f64.exp(), 1.0f64.exp(), 1.0];
        for (k, &(_, p)) in d.iter().enumerate() {
            assert!((p - e[k] / e.iter().sum::<f64>()).abs() < 1e-12);
        }
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[s.sample(&logits) as usize] += 1;
        }
        for &(id, p) in &d {
            assert!((counts[id as usize] as f64 / 20000.0 - p).abs() < 0.01, "{counts:?} vs {d:?}");
        }
        assert_eq!(counts[3], 0);
        assert_eq!(Sampler::new(SamplingParams::greedy()).unwrap().distribution(&logits), vec![(0, 1.0)]);
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(params(0.0)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn seed_reproduces_and_top_k_one_is_greedy() {
        let logits = [1.0, 1.1, 0.9, 1.05];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { temperature: 1.0, seed, ..Default::default() }).unwrap();
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let mut s = Sampler::new(SamplingParams { temperature: 5.0, top_k: 1, ..Default::default() }).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits), 1);
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // probabilities ≈ [0.665, 0.245, 0.090]
        let logits = [2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, top_p: 0.6, ..Default::default() }).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&logits), 0);
        }
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, min_p: 0.2, ..Default::default() }).unwrap();
        for _ in 0..200 {
            assert_ne!(s.sample(&logits), 2);
        }
    }

    #[test]
    fn sampling_frequencies_follow_softmax() {
        let logits = [0.0f32, (2.0f32).ln()];
        let mut s = Sampler::new(params(1.0)).unwrap();
        let ones = (0..6000).filter(|_| s.sample(&logits) == 1).count();
        assert!((3800..4200).contains(&ones), "{ones}");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for p in [
            SamplingParams { temperature: -1.0, ..Default::default() },
            SamplingParams { temperature: f32::NAN, ..Default::default() },
            SamplingParams { top_p: 0.0, ..Default::default() },
            SamplingParams { top_p: 1.5, ..Default::default() },
            SamplingParams { min_p: 1.0, ..Default::default() },
            SamplingParams { repetition_penalty: 0.0, ..Default::default() },
        ] {
            assert!(Sampler::new(p).is_err());
        }
    }
}
