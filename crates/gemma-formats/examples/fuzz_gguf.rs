//! Fuzz the GGUF parser for a bounded time: `cargo run --release -p
//! gemma-formats --example fuzz_gguf -- SECONDS [SEED_FILE.gguf ...]`.
//! A crashing input is written to fuzz-crash.gguf and the exit code is 1.

use gemma_formats::fuzz::fuzz;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut seeds: Vec<Vec<u8>> = args
        .iter()
        .skip(1)
        .filter_map(|p| std::fs::read(p).ok())
        .map(|mut b| {
            b.truncate(1 << 16);
            b
        })
        .collect();
    seeds.push(gemma_formats::gguf_write::sample_file());
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut rounds, mut seed) = (0u64, 1u64);
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < end {
        if let Some(bad) = fuzz(&seeds, 10_000, seed) {
            std::fs::write("fuzz-crash.gguf", &bad).expect("write crash input");
            eprintln!("parser misbehaved; input saved to fuzz-crash.gguf");
            std::process::exit(1);
        }
        rounds += 10_000;
        seed += 1;
    }
    println!("fuzzed the GGUF parser with {rounds} inputs in {secs}s: no crash");
}
