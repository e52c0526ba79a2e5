//! Log-probabilities of the model's next-token distribution (raw logits,
//! before any sampling transform), as OpenAI and TGI report them.

/// A token and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Token id.
    pub id: u32,
    /// Natural-log probability.
    pub logprob: f32,
}

/// `log softmax(logits)[id]` and the `top` most likely tokens (descending,
/// ties by lower id).
pub fn logprobs(logits: &[f32], id: u32, top: usize) -> (f32, Vec<TokenLogprob>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln() as f32;
    let chosen = logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| l - lse);
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() < top || l > best[best.len() - 1].1 {
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (i as u32, l));
                best.truncate(top);
            }
        }
    }
    (chosen, best.into_iter().map(|(id, l)| TokenLogprob { id, logprob: l - lse }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_and_top() {
        let l = [1.0f32, 3.0, 2.0, 3.0];
        let (lp, top) = logprobs(&l, 2, 3);
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((lp - (2f32.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 3, 2]);
        assert!((top.iter().map(|t| t.logprob.exp()).sum::<f32>() - (3f32.exp() * 2.0 + 2f32.exp()) / z).abs() < 1e-6);
    }
}
