//! Perplexity: mean negative log-likelihood of every token given its prefix,
//! window by window, each window from an empty cache.

use gemma_core::{GemmaError, Result};
use gemma_model::{LogitsMode, Model};

/// Rows scored per forward call (bounds the logits buffer).
const SCORE_CHUNK: usize = 64;

/// The outcome of a perplexity run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// Number of scored positions.
    pub tokens: usize,
    /// Mean negative log-likelihood (natural log).
    pub nll: f64,
    /// `exp(nll)`.
    pub ppl: f64,
}

/// Cut text ids (no BOS) into windows of `ctx - 1` ids, each preceded by BOS.
pub fn windows_with_bos(ids: &[u32], bos: u32, ctx: usize) -> Result<Vec<Vec<u32>>> {
    if ctx < 2 {
        return Err(GemmaError::invalid("ctx", format!("must be at least 2, got {ctx}")));
    }
    Ok(ids.chunks(ctx - 1).map(|c| std::iter::once(bos).chain(c.iter().copied()).collect()).collect())
}

/// Cut ids into consecutive windows of `ctx` ids, used exactly as given.
/// A trailing window of a single id scores nothing and is dropped.
pub fn windows_exact(ids: &[u32], ctx: usize) -> Result<Vec<Vec<u32>>> {
    if ctx < 2 {
        return Err(GemmaError::invalid("ctx", format!("must be at least 2, got {ctx}")));
    }
    Ok(ids.chunks(ctx).filter(|c| c.len() >= 2).map(<[u32]>::to_vec).collect())
}

/// Score every position after the first in each window. `progress(done,
/// total)` is called after each window.
pub fn perplexity(model: &Model, windows: &[Vec<u32>], progress: &mut dyn FnMut(usize, usize)) -> Result<Perplexity> {
    let vocab = model.config.vocab_size;
    let (mut nll, mut count) = (0f64, 0usize);
    for (w, window) in windows.iter().enumerate() {
        let mut cache = model.new_cache();
        // Logits at position t predict window[t + 1].
        let inputs = &window[..window.len().saturating_sub(1)];
        let mut offset = 0;
        for chunk in inputs.chunks(SCORE_CHUNK) {
            let logits = model.forward(chunk, &mut cache, LogitsMode::All)?;
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                let target = window[offset + i + 1] as usize;
                if target >= vocab {
                    return Err(GemmaError::InvalidToken { id: target as u32, vocab_size: vocab });
                }
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                nll += lse - row[target] as f64;
                count += 1;
            }
            offset += chunk.len();
        }
        progress(w + 1, windows.len());
    }
    if count == 0 {
        return Err(GemmaError::invalid("input", "nothing to score: need at least 2 tokens"));
    }
    let mean = nll / count as f64;
    Ok(Perplexity { tokens: count, nll: mean, ppl: mean.exp() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_documented_cut() {
        let ids: Vec<u32> = (10..17).collect();
        assert_eq!(windows_with_bos(&ids, 2, 4).unwrap(), vec![vec![2, 10, 11, 12], vec![2, 13, 14, 15], vec![2, 16]]);
        assert_eq!(windows_exact(&ids, 3).unwrap(), vec![vec![10, 11, 12], vec![13, 14, 15]]);
        assert!(windows_exact(&ids, 1).is_err());
    }
}
