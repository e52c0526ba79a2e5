//! `gemma`: generate, chat, score and inspect Gemma models from the command line.

mod args;
mod commands;
mod finetune;
mod progress;
mod pull;
mod synth;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    // Kernels run on gemma's own pool; rayon (used for file work) gets the same size.
    let n = match cli.threads {
        Some(0) => {
            eprintln!("error: --threads must be at least 1");
            std::process::exit(1);
        }
        Some(n) => n,
        None => gemma_kernels::pool::physical_cores(),
    };
    gemma_kernels::pool::set_threads(n);
    if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
        eprintln!("error: cannot start {n} threads: {e}");
        std::process::exit(1);
    }
    if let Err(e) = commands::run(cli.command) {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, `: `-joined, leaving out a cause whose text
/// the message already holds (library errors name their source inline).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !msg.contains(&c) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&c);
        }
    }
    msg
}
