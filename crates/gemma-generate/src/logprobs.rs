//! Log-probabilities of the model's next-token distribution (raw logits,
//! before any penalty or sampling transform), as OpenAI, vLLM and TGI report
//! them, for generated and for prompt tokens.

/// A token and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Token id.
    pub id: u32,
    /// Natural-log probability.
    pub logprob: f32,
}

/// `log softmax(logits)[id]` and the `top` most likely tokens (descending,
/// ties by lower id). Allocates only the `top`-sized result.
pub fn logprobs(logits: &[f32], id: u32, top: usize) -> (f32, Vec<TokenLogprob>) {
    let lse = log_sum_exp(logits);
    let chosen = logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| l - lse);
    (chosen, top_logprobs(logits, lse, top))
}

/// The `top` most likely tokens given `lse = log_sum_exp(logits)`.
pub fn top_logprobs(logits: &[f32], lse: f32, top: usize) -> Vec<TokenLogprob> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    // Linear scan keeping the best `top` sorted: O(vocab) for small `top`.
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() < top || l > best[best.len() - 1].1 {
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (i as u32, l));
                best.truncate(top);
            }
        }
    }
    best.into_iter().map(|(id, l)| TokenLogprob { id, logprob: l - lse }).collect()
}

/// `log Σ exp(logits)` (the sum in f64).
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + logits.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln() as f32
}

/// A prompt token's score: its log-probability given the tokens before it
/// (`None` for the first token, which nothing predicts) and the most likely
/// alternatives at its position, the argmax always among them.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogprob {
    /// Token id.
    pub id: u32,
    /// `log p(id | prefix)`.
    pub logprob: Option<f32>,
    /// The `max(top, 1)` most likely tokens at this position.
    pub top: Vec<TokenLogprob>,
}

/// Score `target` under the logits of the position before it.
pub fn prompt_logprob(logits: &[f32], target: u32, top: usize) -> PromptLogprob {
    let (lp, top) = logprobs(logits, target, top.max(1));
    PromptLogprob { id: target, logprob: Some(lp), top }
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
