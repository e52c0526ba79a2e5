//! Embedding throughput, batched passes against one text per pass, on the
//! same model in one run: `cargo run --release -p gemma --example
//! bench_embed -- [MODEL] [TEXTS] [WORDS]`. A benchmark, not a test.

use gemma::{EmbedOptions, Gemma};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map(std::path::PathBuf::from).unwrap_or_else(gemma::hub::default_model_path);
    let n: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let words: usize = args.get(2).map_or(Ok(12), |s| s.parse())?;
    let g = Gemma::load(&model)?;
    let vocab = ["river", "stone", "music", "window", "garden", "light", "paper", "engine", "cloud", "silver"];
    let texts: Vec<String> = (0..n).map(|i| (0..words).map(|w| vocab[(i * 7 + w * 3) % vocab.len()]).collect::<Vec<_>>().join(" ")).collect();
    let opts = EmbedOptions::default();
    let tokens: usize = g.embed_inputs(&texts, &opts)?.iter().map(Vec::len).sum();
    println!("model {}  texts {n}  tokens {tokens}", model.display());
    for round in 0..3 {
        let t = Instant::now();
        let batched = g.embed(&texts, &opts)?;
        let tb = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut alone = Vec::with_capacity(n);
        for text in &texts {
            alone.extend(g.embed(std::slice::from_ref(text), &opts)?);
        }
        let ta = t.elapsed().as_secs_f64();
        let worst = batched.iter().zip(&alone).flat_map(|(a, b)| a.values.iter().zip(&b.values).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
        println!(
            "round {round}: batched {:.0} tok/s, one per pass {:.0} tok/s, speedup {:.2}x, max |diff| {worst:.1e}",
            tokens as f64 / tb,
            tokens as f64 / ta,
            ta / tb
        );
    }
    Ok(())
}
