//! Embedding requests in the scheduler: the texts of every waiting request
//! are packed, in arrival order, into passes of up to a token budget
//! (`gemma::EMBED_BATCH_TOKENS`, or the prefill chunk while sequences are
//! generating, so their next token never waits for more than about one
//! prefill chunk); one pass runs per scheduler turn. A text longer than the
//! budget runs alone (bidirectional attention needs it whole).

use crate::{EmbedJob, EngineStats};
use gemma::{Embedding, Gemma};
use gemma_model::Workspace;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// A request being embedded: its results so far.
struct Pending {
    job: EmbedJob,
    done: Vec<Embedding>,
}

/// The waiting embedding requests.
#[derive(Default)]
pub(crate) struct EmbedQueue {
    jobs: VecDeque<Pending>,
    ws: Workspace,
}

impl EmbedQueue {
    /// Add a request.
    pub fn push(&mut self, job: EmbedJob) {
        self.jobs.push_back(Pending { job, done: Vec::new() });
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Drop cancelled requests, run one pass of at most `budget` tokens (or
    /// one longer text), answer the requests it completes.
    pub fn step(&mut self, gemma: &Gemma, stats: &EngineStats, budget: usize) {
        let before = self.jobs.len();
        self.jobs.retain(|p| !p.job.cancel.load(Ordering::SeqCst) && !p.job.tx.is_closed());
        let gone = before - self.jobs.len();
        // Pack the next texts: (request index, input index).
        let mut picked: Vec<(usize, usize)> = Vec::new();
        let mut tokens = 0;
        'pack: for (j, p) in self.jobs.iter().enumerate() {
            for i in p.done.len()..p.job.inputs.len() {
                let n = p.job.inputs[i].len();
                if !picked.is_empty() && tokens + n > budget {
                    break 'pack;
                }
                picked.push((j, i));
                tokens += n;
            }
        }
        let mut failed: Option<String> = None;
        if !picked.is_empty() {
            // Texts of one pass share their rows' products, so all of them
            // must want the same truncation: split where it changes.
            let dims = self.jobs[picked[0].0].job.dimensions;
            picked.retain(|&(j, _)| self.jobs[j].job.dimensions == dims);
            let inputs: Vec<&[u32]> = picked.iter().map(|&(j, i)| self.jobs[j].job.inputs[i].as_slice()).collect();
            match gemma.embed_batch(&inputs, dims, &mut self.ws) {
                Ok(out) => {
                    for ((j, _), e) in picked.iter().zip(out) {
                        self.jobs[*j].done.push(e);
                    }
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        // The queue counter drops before each answer, so a requester woken
        // by it never sees its own request still counted.
        let done = |stats: &EngineStats| {
            let q = stats.queued.load(Ordering::SeqCst);
            stats.queued.fetch_sub(q.min(1), Ordering::SeqCst);
        };
        (0..gone).for_each(|_| done(stats));
        if let Some(msg) = failed {
            // The pass's requests fail; the others go on.
            let mut hit: Vec<usize> = picked.iter().map(|p| p.0).collect();
            hit.dedup();
            for &j in hit.iter().rev() {
                if let Some(p) = self.jobs.remove(j) {
                    done(stats);
                    let _ = p.job.tx.send(Err(msg.clone()));
                }
            }
        }
        let mut i = 0;
        while i < self.jobs.len() {
            if self.jobs[i].done.len() < self.jobs[i].job.inputs.len() {
                i += 1;
            } else if let Some(p) = self.jobs.remove(i) {
                done(stats);
                let _ = p.job.tx.send(Ok(p.done));
            }
        }
    }
}
