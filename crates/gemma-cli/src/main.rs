//! `gemma`: generate, chat, score and inspect Gemma models from the command line.

mod args;
mod commands;
mod progress;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global() {
            eprintln!("error: cannot start {n} threads: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = commands::run(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
