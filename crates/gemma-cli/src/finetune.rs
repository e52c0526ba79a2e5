//! `gemma finetune`: arguments and printing around `gemma::train`.

use crate::args::ModelArgs;
use crate::commands::load;
use anyhow::{bail, Context, Result};
use clap::Args;
use gemma::train::data::{self, LossMask};
use gemma::train::optim::{AdamW, Schedule};
use gemma::train::trainer::{Progress, TrainConfig};
use gemma::train::LoraSpec;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// `gemma finetune`.
#[derive(Debug, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data, JSON Lines: {"text"}, {"messages": [...]} or {"prompt", "completion"}.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: the PEFT adapter, trainer_log.jsonl, loss.svg, checkpoints.
    #[arg(long)]
    pub out: PathBuf,
    /// Held-out data in the same format: eval_loss at --eval-every and at the end.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA alpha (scale alpha/rank, or alpha/√rank with --use-rslora).
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    /// Dropout on the LoRA input.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// all-linear, or a comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.
    #[arg(long, default_value = "all-linear")]
    pub targets: String,
    /// rsLoRA scaling.
    #[arg(long)]
    pub use_rslora: bool,
    /// Start from this PEFT adapter instead of a fresh one.
    #[arg(long)]
    pub init_lora: Option<PathBuf>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// linear, cosine or constant (after warmup).
    #[arg(long, default_value = "linear")]
    pub scheduler: String,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0.9)]
    pub adam_beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    pub adam_beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// Passes over the data.
    #[arg(long, default_value_t = 1, conflicts_with = "max_steps")]
    pub epochs: usize,
    /// Optimizer steps (instead of --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch (no padding: each is its own segment).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Longest sequence in tokens (longer ones are cut) [default: 1024, or the model's context if shorter].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Fill micro-batches up to batch-size × max-length tokens.
    #[arg(long)]
    pub packing: bool,
    /// auto, all, completion-only, assistant-only.
    #[arg(long, default_value = "auto")]
    pub loss: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print a log line every N steps (stderr).
    #[arg(long, default_value_t = 1)]
    pub log_every: usize,
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Write checkpoint-N/ every N steps.
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Continue from a checkpoint-N/ folder of an earlier run.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Tokenize the data, write OUT/tokenized.jsonl ({"ids", "targets"} per example) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep only each block's input and recompute its activations in the backward (less memory, one more forward).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Compute dtype of the products with a quantized base (QLoRA): bf16 (bitsandbytes' usual `bnb_4bit_compute_dtype`: weights dequantized to bf16, activations and gradients rounded to bf16, f32 sums, on AMX-BF16 tiles; on AVX512-BF16 without AMX the forward only; other CPUs compute in f32) or f32 (exact products on the dequantized weights). A bf16 base always computes in bf16 where the CPU has these instructions.
    #[arg(long, default_value = "bf16")]
    pub compute_dtype: String,
}

/// Run `gemma finetune`.
pub fn finetune(a: FinetuneArgs) -> Result<()> {
    if !a.model.lora.is_empty() {
        bail!("--lora applies an adapter for inference; to continue training one, use --init-lora");
    }
    let mask = LossMask::parse(&a.loss).with_context(|| format!("unknown --loss `{}` (auto, all, completion-only, assistant-only)", a.loss))?;
    let schedule = Schedule::parse(&a.scheduler).with_context(|| format!("unknown --scheduler `{}` (linear, cosine, constant)", a.scheduler))?;
    if a.max_length.is_some_and(|n| n < 2) {
        bail!("--max-length must be at least 2");
    }
    let targets = LoraSpec::parse_targets(&a.targets)?;
    match a.compute_dtype.as_str() {
        "bf16" => gemma_kernels::set_quantized_training_bf16(true),
        "f32" => gemma_kernels::set_quantized_training_bf16(false),
        other => bail!("unknown --compute-dtype `{other}` (bf16, f32)"),
    }
    let g = load(&a.model)?;
    if g.model.weights.head().dtype().is_quantized() {
        let compute = match (a.compute_dtype.as_str(), gemma_kernels::bf16_products()) {
            ("bf16", Some("AMX-BF16")) => "bf16 (AMX-BF16)".to_string(),
            ("bf16", Some(path)) => format!("bf16 in the forward ({path}), f32 in the backward"),
            _ => "f32".to_string(),
        };
        eprintln!("QLoRA compute: {compute}");
    }
    if a.dry_run {
        let ctx = g.model.config.max_position_embeddings;
        let train = data::load(&a.data, &g.tokenizer, mask, a.max_length.unwrap_or(1024.min(ctx)))?;
        std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
        let path = a.out.join("tokenized.jsonl");
        let mut text = String::new();
        for e in &train.examples {
            let targets: Vec<u8> = e.targets.iter().map(|&t| t as u8).collect();
            text += &serde_json::json!({"ids": e.ids, "targets": targets}).to_string();
            text.push('\n');
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {} ({} examples)", path.display(), train.examples.len());
        return Ok(());
    }
    let o = gemma::finetune::FinetuneOptions {
        data: a.data.clone(),
        eval_data: a.eval_data.clone(),
        out: a.out.clone(),
        lora: LoraSpec { rank: a.rank, alpha: a.alpha, rslora: a.use_rslora, targets, dropout: a.dropout },
        init_lora: a.init_lora.clone(),
        loss: mask,
        max_length: a.max_length,
        train: TrainConfig {
            lr: a.lr,
            schedule,
            warmup_steps: a.warmup_steps,
            adam: AdamW { beta1: a.adam_beta1, beta2: a.adam_beta2, eps: a.adam_eps, weight_decay: a.weight_decay },
            max_grad_norm: a.max_grad_norm,
            epochs: a.epochs,
            max_steps: a.max_steps,
            batch_size: a.batch_size,
            grad_accum: a.grad_accum,
            packing: a.packing,
            max_length: 0,
            seed: a.seed,
            eval_every: a.eval_every,
            save_every: a.save_every,
            gradient_checkpointing: a.gradient_checkpointing,
        },
        resume: a.resume.clone(),
        base_model: a.model.model.clone().unwrap_or_default(),
        targets: a.targets.clone(),
    };
    let pb = ProgressBar::new(0);
    pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, ETA {eta})").expect("valid template").progress_chars("=> "));
    let r = gemma::finetune::finetune(
        &g,
        &o,
        &mut |p| {
            match p {
                Progress::Step(s, total) => {
                    pb.set_length(*total as u64);
                    pb.set_position(s.step as u64);
                    pb.set_message(format!("loss {:.4} {:.0} tok/s", s.loss, s.tokens_per_second));
                    if a.log_every > 0 && (s.step % a.log_every == 0 || s.step == *total) {
                        pb.suspend(|| eprintln!("step {:>5}/{total}  loss {:.4}  lr {:.3e}  grad_norm {:.3}  {:.0} tok/s", s.step, s.loss, s.learning_rate, s.grad_norm, s.tokens_per_second));
                    }
                }
                Progress::Eval { step, eval_loss } => pb.suspend(|| eprintln!("step {step:>5}  eval_loss {eval_loss:.4}")),
                Progress::Saved(dir) => pb.suspend(|| eprintln!("saved {}", dir.display())),
            }
            true
        },
        &mut |line| pb.suspend(|| eprintln!("{line}")),
    )?;
    pb.finish_and_clear();
    eprintln!(
        "done: {} steps in {:.1}s ({:.0} tokens/s), loss {:.4} → {:.4}{}; adapter in {}",
        r.steps,
        r.seconds,
        r.tokens as f64 / r.seconds.max(1e-9),
        r.first_loss,
        r.last_loss,
        r.eval_loss.map_or(String::new(), |e| format!(", eval loss {e:.4}")),
        a.out.display()
    );
    Ok(())
}

/// `gemma merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The base model: a GGUF file or a Hugging Face folder (or Hub id).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// The PEFT adapter folder to merge.
    #[arg(long)]
    pub lora: PathBuf,
    /// Output: a folder (Hugging Face base, float type) or a .gguf file.
    #[arg(long)]
    pub out: PathBuf,
    /// f32, bf16, f16, or a GGUF quant type / llama.cpp mix (q8_0, q4_k_m, …).
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Text whose perplexity shows what merging into that type costs (default: a built-in paragraph).
    #[arg(long)]
    pub ppl_text: Option<PathBuf>,
}

/// Run `gemma merge`.
pub fn merge(a: MergeArgs) -> Result<()> {
    let input = crate::pull::resolve(a.model.as_deref())?;
    let text = match &a.ppl_text {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => gemma::merge::DEFAULT_PPL_TEXT.to_string(),
    };
    let t0 = Instant::now();
    let r = gemma::merge::merge(&input, &a.lora, &a.out, &a.dtype, &text).with_context(|| format!("cannot merge {} into {}", a.lora.display(), input.display()))?;
    eprintln!("merged {} projections into {} ({}, {}) in {:.1}s", r.merged, r.out.display(), r.format, a.dtype, t0.elapsed().as_secs_f64());
    let cost = (r.ppl_merged / r.ppl_adapter - 1.0) * 100.0;
    println!("perplexity on {} tokens: adapter at run time {:.4}, merged {} {:.4} ({cost:+.2}%)", r.tokens, r.ppl_adapter, a.dtype, r.ppl_merged);
    Ok(())
}

/// `gemma export-lora`.
#[derive(Debug, Args)]
pub struct ExportLoraArgs {
    /// The PEFT adapter folder.
    #[arg(long)]
    pub lora: PathBuf,
    /// The GGUF file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// GGUF architecture of the base (gemma, gemma2, gemma3, gemma3n, gemma4) when adapter_config.json does not tell.
    #[arg(long)]
    pub arch: Option<String>,
}

/// Run `gemma export-lora`.
pub fn export_lora(a: ExportLoraArgs) -> Result<()> {
    let n = gemma::train::export::export_gguf_lora(&a.lora, &a.out, a.arch.as_deref())?;
    eprintln!("wrote {} ({n} adapted projections, llama.cpp GGUF LoRA)", a.out.display());
    Ok(())
}
