//! Logits processors: an ordered chain that edits the next-token logits
//! before the sampler draws (`apply`) and learns each chosen token
//! (`accept`). Penalties live here; constrained decoding joins the chain as
//! one more processor (`grammar.rs`). No processor allocates per token.

use gemma_core::Result;

/// One step of the chain.
pub trait LogitsProcessor: Send + std::fmt::Debug {
    /// Edit the logits of the next position (`[vocab]`) in place.
    fn apply(&mut self, logits: &mut [f32]) -> Result<()>;
    /// The token `id` was chosen (and will be fed to the model).
    fn accept(&mut self, id: u32) -> Result<()>;
    /// For a processor that only forbids tokens (a grammar): whether `id`
    /// is allowed now, answered without building the whole mask. `None`
    /// (the default) for processors that change values.
    fn allows(&mut self, _id: u32) -> Result<Option<bool>> {
        Ok(None)
    }
}

/// transformers' repetition penalty over the prompt and everything
/// generated: each distinct id seen has its logit divided by `penalty` when
/// positive, multiplied when negative.
#[derive(Debug, Clone)]
pub struct RepetitionPenalty {
    penalty: f32,
    /// One bit per vocabulary id: seen already.
    seen: Vec<u64>,
    /// The distinct ids seen, in first-seen order.
    ids: Vec<u32>,
}

impl RepetitionPenalty {
    /// A penalty over a `vocab`-sized vocabulary, primed with the prompt.
    pub fn new(penalty: f32, vocab: usize, prompt: &[u32]) -> Self {
        let mut p = Self { penalty, seen: vec![0; vocab.div_ceil(64)], ids: Vec::new() };
        for &id in prompt {
            p.see(id);
        }
        p
    }

    fn see(&mut self, id: u32) {
        let (w, b) = (id as usize / 64, id % 64);
        if let Some(word) = self.seen.get_mut(w) {
            if *word & (1 << b) == 0 {
                *word |= 1 << b;
                self.ids.push(id);
            }
        }
    }
}

impl LogitsProcessor for RepetitionPenalty {
    fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        for &id in &self.ids {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / self.penalty } else { *l * self.penalty };
            }
        }
        Ok(())
    }

    fn accept(&mut self, id: u32) -> Result<()> {
        self.see(id);
        Ok(())
    }
}

/// OpenAI's presence and frequency penalties over the generated tokens:
/// `logit -= presence · [count > 0] + frequency · count`.
#[derive(Debug, Clone)]
pub struct PresenceFrequencyPenalty {
    presence: f32,
    frequency: f32,
    /// `(id, count)` of each distinct generated id, in first-seen order.
    counts: Vec<(u32, u32)>,
}

impl PresenceFrequencyPenalty {
    /// Penalties as OpenAI defines them (each in [-2, 2]).
    pub fn new(presence: f32, frequency: f32) -> Self {
        Self { presence, frequency, counts: Vec::new() }
    }
}

impl LogitsProcessor for PresenceFrequencyPenalty {
    fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        for &(id, c) in &self.counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= self.presence + self.frequency * c as f32;
            }
        }
        Ok(())
    }

    fn accept(&mut self, id: u32) -> Result<()> {
        match self.counts.iter_mut().find(|(i, _)| *i == id) {
            Some((_, c)) => *c += 1,
            None => self.counts.push((id, 1)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_scales_seen_ids_once() {
        let mut p = RepetitionPenalty::new(2.0, 4, &[1, 1, 3]);
        let mut l = [1.0, 1.5, -1.0, -0.5];
        p.apply(&mut l).unwrap();
        assert_eq!(l, [1.0, 0.75, -1.0, -1.0]);
        p.accept(0).unwrap();
        let mut l = [1.0, 1.5, -1.0, -0.5];
        p.apply(&mut l).unwrap();
        assert_eq!(l, [0.5, 0.75, -1.0, -1.0]);
    }

    #[test]
    fn presence_and_frequency_count_generated_tokens() {
        let mut p = PresenceFrequencyPenalty::new(0.5, 0.25);
        p.accept(2).unwrap();
        p.accept(2).unwrap();
        p.accept(0).unwrap();
        let mut l = [0.0f32; 3];
        p.apply(&mut l).unwrap();
        assert_eq!(l, [-0.75, 0.0, -1.0]);
    }
}
