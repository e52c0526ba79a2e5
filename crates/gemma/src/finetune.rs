//! A LoRA/QLoRA fine-tuning run on a loaded model, as `gemma finetune` and
//! the Python package's `finetune` both start it: data loaded and cut,
//! the adapter made (or continued), the trainer run with progress
//! reported, the PEFT adapter and its model card written.

use crate::Gemma;
use gemma_train::data::{self, LossMask};
use gemma_train::trainer::{Progress, TrainConfig, Trainer};
use gemma_train::{LoraSpec, Result, TrainError, TrainableLora};
use std::path::PathBuf;
use std::time::Instant;

/// What a run trains on and how (transformers' `TrainingArguments` and
/// PEFT's `LoraConfig` in [`TrainConfig`] and [`LoraSpec`]).
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// Training data (JSONL: text, prompt/completion or messages).
    pub data: PathBuf,
    /// Held-out data scored at `eval_every` and at the end.
    pub eval_data: Option<PathBuf>,
    /// Where the adapter, logs and checkpoints go.
    pub out: PathBuf,
    /// The adapter to train (ignored with `init_lora`).
    pub lora: LoraSpec,
    /// Continue training this PEFT adapter instead of a fresh one.
    pub init_lora: Option<PathBuf>,
    /// Which tokens the loss counts.
    pub loss: LossMask,
    /// Longest sequence (None: 1024 or the model's context, if shorter).
    pub max_length: Option<usize>,
    /// Optimizer, schedule, batches, steps (its `max_length` is set from the above).
    pub train: TrainConfig,
    /// Continue from a `checkpoint-N/` folder of an earlier run.
    pub resume: Option<PathBuf>,
    /// The base model's name for the adapter config and card.
    pub base_model: String,
    /// How the targets were given (for the card).
    pub targets: String,
}

/// How a run went.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneReport {
    /// Optimizer steps run in all (a resumed run counts the earlier ones).
    pub steps: usize,
    /// Wall time of the steps run now.
    pub seconds: f64,
    /// Tokens run through the model now.
    pub tokens: usize,
    /// Loss of the first step run now and of the last.
    pub first_loss: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Loss on the eval data at the end (with eval data).
    pub eval_loss: Option<f64>,
    /// Training examples.
    pub examples: usize,
    /// Trainable LoRA parameters.
    pub trainable: usize,
}

/// Run `o` on `g`. `on` hears every step, evaluation and checkpoint and
/// returns false to stop (the run then ends with an error naming the last
/// checkpoint, and no adapter is written); `note` gets one line per
/// fact worth telling (data, adapter, resume).
pub fn finetune(g: &Gemma, o: &FinetuneOptions, on: &mut dyn FnMut(&Progress) -> bool, note: &mut dyn FnMut(String)) -> Result<FinetuneReport> {
    let ctx = g.model.config.max_position_embeddings;
    if let Some(n) = o.max_length {
        if n < 2 || n > ctx {
            return Err(TrainError::Invalid(format!("max_length {n} must be 2..={ctx} (the model's context)")));
        }
    }
    let max_length = o.max_length.unwrap_or(1024.min(ctx));
    let train = data::load(&o.data, &g.tokenizer, o.loss, max_length)?;
    let eval = o.eval_data.as_ref().map(|p| data::load(p, &g.tokenizer, o.loss, max_length)).transpose()?;
    note(format!(
        "data: {} examples, {} tokens, {} learned{}{}",
        train.examples.len(),
        train.tokens(),
        train.examples.iter().map(|e| e.count()).sum::<usize>(),
        if train.skipped > 0 { format!(", {} lines skipped (nothing left to learn)", train.skipped) } else { String::new() },
        eval.as_ref().map_or(String::new(), |e| format!("; eval: {} examples", e.examples.len()))
    ));
    let lora = match &o.init_lora {
        Some(dir) => {
            let l = TrainableLora::load(dir, &g.model.config, o.lora.dropout)?;
            note(format!("starting from {} (rank {}, alpha {})", dir.display(), l.spec.rank, l.spec.alpha));
            l
        }
        None => TrainableLora::init(&g.model.config, o.lora.clone(), o.train.seed)?,
    };
    let cfg = TrainConfig { max_length, ..o.train.clone() };
    let trainable = lora.count();
    let mut t = Trainer::new(&g.model, lora, cfg, &train.examples, eval.as_ref().map(|e| &e.examples[..]), &o.out)?;
    if let Some(dir) = &o.resume {
        t.resume(dir)?;
        note(format!("resuming at step {}", t.step));
    }
    let total = t.total_steps();
    note(format!("training {trainable} LoRA parameters (rank {}), {total} steps", t.lora.spec.rank));
    let t0 = Instant::now();
    let (mut tokens, mut first_loss, mut last_loss, mut eval_loss) = (0usize, None, f64::NAN, None);
    t.run(&mut |p| {
        match p {
            Progress::Step(s, _) => {
                tokens += s.tokens;
                first_loss.get_or_insert(s.loss);
                last_loss = s.loss;
            }
            Progress::Eval { eval_loss: e, .. } => eval_loss = Some(*e),
            Progress::Saved(_) => {}
        }
        on(p)
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let base = &o.base_model;
    let card = format!(
        "---\nbase_model: {base}\nlibrary_name: peft\ntags: [lora, gemma-rs]\n---\n\n# LoRA adapter for {base}\n\nTrained with `gemma finetune` (gemma-rs) on `{}`: {} examples, rank {}, alpha {}, targets {}, lr {}, {} steps.\nFinal training loss {:.4}{}.\n\nLoad it with PEFT (`PeftModel.from_pretrained(base, \"{}\")`), or `gemma generate --lora {}`.\n",
        o.data.display(),
        train.examples.len(),
        t.lora.spec.rank,
        t.lora.spec.alpha,
        o.targets,
        o.train.lr,
        total,
        last_loss,
        eval_loss.map_or(String::new(), |e| format!(", eval loss {e:.4}")),
        o.out.display(),
        o.out.display()
    );
    t.save_final(base, &format!("{:?}", g.model.config.family), &card)?;
    Ok(FinetuneReport { steps: total, seconds, tokens, first_loss: first_loss.unwrap_or(f64::NAN), last_loss, eval_loss, examples: train.examples.len(), trainable })
}
