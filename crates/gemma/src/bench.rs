//! Throughput measurement in the spirit of llama-bench: prompt processing
//! (`pp`: one forward over N prompt tokens) and text generation (`tg`: N
//! single-token forwards), each after `depth` tokens already in the cache
//! (llama-bench's `-d`: computed once, untimed, and copied for every
//! repetition), repeated after a warm-up, reported as tokens per second.

use crate::{Gemma, LogitsMode, Result};
use std::time::Instant;

/// One measured test.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Prompt tokens per repetition (0 for a generation test).
    pub n_prompt: usize,
    /// Generated tokens per repetition (0 for a prompt test).
    pub n_gen: usize,
    /// Tokens in the cache before the timed part.
    pub n_depth: usize,
    /// Seconds of each repetition.
    pub samples_s: Vec<f64>,
}

impl BenchResult {
    /// Tokens per repetition.
    pub fn tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    /// Tokens per second of each repetition.
    pub fn samples_ts(&self) -> Vec<f64> {
        self.samples_s.iter().map(|s| self.tokens() as f64 / s).collect()
    }

    /// Mean and sample standard deviation of tokens per second.
    pub fn ts_mean_std(&self) -> (f64, f64) {
        mean_std(&self.samples_ts())
    }

    /// Mean and sample standard deviation of seconds.
    pub fn s_mean_std(&self) -> (f64, f64) {
        mean_std(&self.samples_s)
    }
}

/// Mean and sample standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Deterministic pseudo-random prompt ids (as llama-bench, content does not matter).
fn prompt_ids(g: &Gemma, n: usize) -> Vec<u32> {
    let vocab = g.model.config.vocab_size as u64;
    // Skip the control tokens at the start of the vocabulary.
    let lo = if vocab > 2000 { 1000 } else { vocab.min(8) - 1 };
    let mut s = 0x2545F4914F6CDD1Du64;
    std::iter::once(g.tokenizer.bos_id)
        .chain((1..n).map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo + s % (vocab - lo)) as u32
        }))
        .collect()
}

/// The cache after `depth` tokens (bench ids from `ids`), and the ids that follow.
fn at_depth(g: &Gemma, depth: usize, n: usize) -> Result<(gemma_model::KvCache, Vec<u32>)> {
    let ids = prompt_ids(g, depth + n);
    let mut cache = g.model.new_cache();
    if depth > 0 {
        let mut ws = gemma_model::Workspace::new();
        g.model.forward_into(&ids[..depth], &mut cache, &mut ws, LogitsMode::Last)?;
    }
    Ok((cache, ids[depth..].to_vec()))
}

/// Time `n` prompt tokens in one forward after `depth` cached tokens: a
/// warm-up, then `reps` repetitions.
pub fn bench_prompt(g: &Gemma, n: usize, depth: usize, reps: usize) -> Result<BenchResult> {
    let (start, ids) = at_depth(g, depth, n)?;
    let run = || -> Result<f64> {
        let (mut cache, mut ws) = (start.clone(), gemma_model::Workspace::new());
        let t = Instant::now();
        g.model.forward_into(&ids, &mut cache, &mut ws, LogitsMode::Last)?;
        Ok(t.elapsed().as_secs_f64())
    };
    run()?;
    let samples_s = (0..reps).map(|_| run()).collect::<Result<Vec<_>>>()?;
    Ok(BenchResult { n_prompt: n, n_gen: 0, n_depth: depth, samples_s })
}

/// Time `n` single-token decode steps after `depth` cached tokens.
pub fn bench_gen(g: &Gemma, n: usize, depth: usize, reps: usize) -> Result<BenchResult> {
    let (start, ids) = at_depth(g, depth, n)?;
    let run = || -> Result<f64> {
        let (mut cache, mut ws) = (start.clone(), gemma_model::Workspace::new());
        let t = Instant::now();
        for &id in &ids {
            g.model.forward_into(&[id], &mut cache, &mut ws, LogitsMode::Last)?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    run()?;
    let samples_s = (0..reps).map(|_| run()).collect::<Result<Vec<_>>>()?;
    Ok(BenchResult { n_prompt: 0, n_gen: n, n_depth: depth, samples_s })
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// This machine's memory read bandwidth in bytes/s with the current rayon
/// pool: the best of 5 passes summing a 512 MiB buffer split over the threads.
pub fn read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let words = (512usize << 20) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let per = words.div_ceil(rayon::current_num_threads() * 8).max(1 << 16);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let sum: u64 = buf.par_chunks(per).map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b))).reduce(|| 0, u64::wrapping_add);
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / s);
    }
    best
}
