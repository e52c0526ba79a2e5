//! The training loop: seeded shuffling per epoch, micro-batches of whole
//! sequences (or packed up to `batch_size × max_length` tokens), gradient
//! accumulation normalized by the step's target count, clipping, AdamW and
//! the schedule, `trainer_log.jsonl`, evaluation, checkpoints that
//! `--resume` continues from exactly, and the final PEFT adapter.

use crate::adapter::{safetensors_bytes, write_atomic, TrainableLora};
use crate::backward::{loss_and_grad, Example};
use crate::optim::{clip_grad_norm, AdamState, AdamW, Schedule};
use gemma_core::rng::Rng;
use crate::svg::loss_svg;
use crate::{Result, TrainError};
use gemma_model::{Model, Tape};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of a run (transformers' `TrainingArguments` names and defaults).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Schedule after warmup.
    pub schedule: Schedule,
    /// Linear warmup steps from 0.
    pub warmup_steps: usize,
    /// AdamW settings.
    pub adam: AdamW,
    /// Global-norm clipping (0: off).
    pub max_grad_norm: f64,
    /// Passes over the data (unless `max_steps`).
    pub epochs: usize,
    /// Optimizer steps to run, overriding `epochs`.
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Fill micro-batches up to `batch_size × max_length` tokens instead of
    /// `batch_size` sequences.
    pub packing: bool,
    /// Longest sequence (data are cut to it when loaded).
    pub max_length: usize,
    /// Shuffling and dropout seed.
    pub seed: u64,
    /// Evaluate every N steps (and at the end) when there is eval data.
    pub eval_every: Option<usize>,
    /// Save a checkpoint every N steps.
    pub save_every: Option<usize>,
    /// Keep only each block's input in the forward and recompute the rest
    /// in the backward (activation memory per token: one hidden vector per
    /// layer instead of ~15 buffers; costs one more forward).
    pub gradient_checkpointing: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            schedule: Schedule::Linear,
            warmup_steps: 0,
            adam: AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            max_grad_norm: 1.0,
            epochs: 1,
            max_steps: None,
            batch_size: 8,
            grad_accum: 1,
            packing: false,
            max_length: 1024,
            seed: 42,
            eval_every: None,
            save_every: None,
            gradient_checkpointing: false,
        }
    }
}

/// One optimizer step, as written to `trainer_log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    /// 1-based step.
    pub step: usize,
    /// Mean loss over the step's target tokens, before its update.
    pub loss: f64,
    /// Learning rate this step's update used.
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens run through the model in this step.
    pub tokens: usize,
    /// Tokens per second of this step (forward + backward + update).
    pub tokens_per_second: f64,
    /// Epochs completed (fractional).
    pub epoch: f64,
}

/// What the loop reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A step ended.
    Step(StepLog, usize),
    /// An evaluation ended.
    Eval {
        /// After this step.
        step: usize,
        /// Mean loss over the eval data.
        eval_loss: f64,
    },
    /// A checkpoint was written.
    Saved(PathBuf),
}

/// `trainer_state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    total_steps: usize,
    seed: u64,
    rank: usize,
    targets: Vec<bool>,
    model: String,
}

/// A short identity of a model's shape (resume refuses another model).
pub fn model_identity(m: &Model) -> String {
    let c = &m.config;
    format!("{:?} layers={} hidden={} heads={}/{} ff={} vocab={}", c.family, c.num_layers(), c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size, c.vocab_size)
}

/// The run: model (read only), the adapter being trained, data, state.
pub struct Trainer<'a> {
    model: &'a Model,
    /// The adapter being trained.
    pub lora: TrainableLora,
    cfg: TrainConfig,
    train: &'a [Example],
    eval: Option<&'a [Example]>,
    out: PathBuf,
    opt: AdamState,
    /// Steps done.
    pub step: usize,
    log: Vec<String>,
    curve: Vec<(usize, f64)>,
    eval_curve: Vec<(usize, f64)>,
    tape: Tape,
}

impl<'a> Trainer<'a> {
    /// A run writing into `out`. The model is only read: training runs the
    /// reference numerics and carries the adapter with its sequences.
    pub fn new(model: &'a Model, lora: TrainableLora, cfg: TrainConfig, train: &'a [Example], eval: Option<&'a [Example]>, out: &Path) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.grad_accum == 0 {
            return Err(TrainError::Invalid("batch size and gradient accumulation must be at least 1".into()));
        }
        if train.is_empty() {
            return Err(TrainError::Invalid("no training examples".into()));
        }
        if lora.spec.dropout < 0.0 || lora.spec.dropout >= 1.0 {
            return Err(TrainError::Invalid(format!("LoRA dropout must be in [0, 1), got {}", lora.spec.dropout)));
        }
        let opt = AdamState::new(&lora);
        let tape = Tape { checkpointing: cfg.gradient_checkpointing, ..Tape::default() };
        Ok(Self { model, lora, cfg, train, eval, out: out.to_path_buf(), opt, step: 0, log: Vec::new(), curve: Vec::new(), eval_curve: Vec::new(), tape })
    }

    /// Micro-batches of one epoch (indices into the data), seeded by epoch.
    fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        Rng::new(self.cfg.seed.wrapping_add(epoch as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)).shuffle(&mut order);
        if !self.cfg.packing {
            return order.chunks(self.cfg.batch_size).map(<[usize]>::to_vec).collect();
        }
        let budget = self.cfg.batch_size * self.cfg.max_length;
        let mut out: Vec<Vec<usize>> = Vec::new();
        let mut used = 0;
        for i in order {
            let n = self.train[i].ids.len();
            if out.is_empty() || used + n > budget {
                out.push(Vec::new());
                used = 0;
            }
            if let Some(b) = out.last_mut() {
                b.push(i);
            }
            used += n;
        }
        out
    }

    /// Optimizer steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.epoch_batches(0).len().div_ceil(self.cfg.grad_accum)
    }

    /// Steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.cfg.max_steps.unwrap_or(self.cfg.epochs * self.steps_per_epoch())
    }

    /// Continue from a checkpoint folder written by this trainer.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let spath = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&spath).map_err(|e| TrainError::Io(spath.display().to_string(), e))?;
        let st: CheckpointState = serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("{}: {e}", spath.display())))?;
        let here = model_identity(self.model);
        if st.model != here {
            return Err(TrainError::Invalid(format!("{}: the checkpoint is for another model ({}; this one is {here})", dir.display(), st.model)));
        }
        if st.rank != self.lora.spec.rank || st.targets != self.lora.spec.targets.to_vec() {
            return Err(TrainError::Invalid(format!(
                "{}: the checkpoint has rank {} and targets {:?}; this run asks for rank {} and {:?}",
                dir.display(),
                st.rank,
                st.targets,
                self.lora.spec.rank,
                self.lora.spec.targets
            )));
        }
        let lora = TrainableLora::load(dir, &self.model.config, self.lora.spec.dropout)?;
        let opath = dir.join("optimizer.safetensors");
        let bytes = std::fs::read(&opath).map_err(|e| TrainError::Io(opath.display().to_string(), e))?;
        let sf = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Invalid(format!("{}: {e}", opath.display())))?;
        let mut opt = AdamState::new(&lora);
        opt.step = st.step as u64;
        for (k, (m, v)) in opt.m.iter_mut().zip(opt.v.iter_mut()).enumerate() {
            for (name, dst) in [(format!("m.{k}"), m), (format!("v.{k}"), v)] {
                let t = sf.tensor(&name).map_err(|_| TrainError::Invalid(format!("{}: no tensor {name}", opath.display())))?;
                if t.data().len() != dst.len() * 4 {
                    return Err(TrainError::Invalid(format!("{}: {name} has the wrong size", opath.display())));
                }
                dst.iter_mut().zip(t.data().chunks_exact(4)).for_each(|(d, c)| *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
        }
        let lpath = dir.join("trainer_log.jsonl");
        let log = std::fs::read_to_string(&lpath).map_err(|e| TrainError::Io(lpath.display().to_string(), e))?;
        self.log = log.lines().map(str::to_string).collect();
        self.curve.clear();
        self.eval_curve.clear();
        for l in &self.log {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| TrainError::Invalid(format!("{}: {e}", lpath.display())))?;
            let s = v["step"].as_u64().unwrap_or(0) as usize;
            if let Some(x) = v.get("loss").and_then(|x| x.as_f64()) {
                self.curve.push((s, x));
            }
            if let Some(x) = v.get("eval_loss").and_then(|x| x.as_f64()) {
                self.eval_curve.push((s, x));
            }
        }
        self.lora = lora;
        self.opt = opt;
        self.step = st.step;
        Ok(())
    }

    /// Mean loss over the eval data.
    pub fn evaluate(&mut self) -> Result<Option<f64>> {
        let Some(eval) = self.eval else { return Ok(None) };
        let (mut sum, mut count) = (0.0, 0);
        for b in eval.chunks(self.cfg.batch_size) {
            let mb = loss_and_grad(self.model, &mut self.lora, b, 1.0, 0, &mut self.tape, false)?;
            sum += mb.loss_sum;
            count += mb.targets;
        }
        Ok(Some(sum / count.max(1) as f64))
    }

    /// Run until the last step, reporting through `on`, which returns
    /// false to stop the run (an error naming the last checkpoint).
    pub fn run(&mut self, on: &mut dyn FnMut(&Progress) -> bool) -> Result<()> {
        std::fs::create_dir_all(&self.out).map_err(|e| TrainError::Io(self.out.display().to_string(), e))?;
        let total = self.total_steps();
        let spe = self.steps_per_epoch();
        let mut epoch_cache: Option<(usize, Vec<Vec<usize>>)> = None;
        self.write_log()?;
        while self.step < total {
            let k = self.step;
            let (epoch, within) = (k / spe, k % spe);
            if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_cache = Some((epoch, self.epoch_batches(epoch)));
            }
            let batches = &epoch_cache.as_ref().map(|c| &c.1).ok_or_else(|| TrainError::Invalid("no batches".into()))?;
            let micro: Vec<Vec<Example>> = batches
                .iter()
                .skip(within * self.cfg.grad_accum)
                .take(self.cfg.grad_accum)
                .map(|b| b.iter().map(|&i| self.train[i].clone()).collect())
                .collect();
            let count: usize = micro.iter().flatten().map(Example::count).sum();
            let t0 = Instant::now();
            self.lora.zero_grad();
            let (mut loss_sum, mut tokens) = (0.0, 0);
            for (j, mb) in micro.iter().enumerate() {
                let seed = self.cfg.seed ^ ((k as u64) << 20) ^ j as u64;
                let r = loss_and_grad(self.model, &mut self.lora, mb, 1.0 / count.max(1) as f32, seed, &mut self.tape, true)
                    .map_err(|e| self.stopped(k + 1, &e.to_string()))?;
                loss_sum += r.loss_sum;
                tokens += r.tokens;
            }
            let loss = loss_sum / count.max(1) as f64;
            let grad_norm = clip_grad_norm(&mut self.lora, self.cfg.max_grad_norm);
            if !loss.is_finite() || !grad_norm.is_finite() {
                return Err(self.stopped(k + 1, &format!("loss {loss}, gradient norm {grad_norm}")));
            }
            let lr = self.cfg.lr * self.cfg.schedule.factor(k, self.cfg.warmup_steps, total);
            self.cfg.adam.step(&mut self.lora, &mut self.opt, lr);
                self.step = k + 1;
            let secs = t0.elapsed().as_secs_f64();
            let log = StepLog {
                step: k + 1,
                loss,
                learning_rate: lr,
                grad_norm,
                tokens,
                tokens_per_second: tokens as f64 / secs.max(1e-9),
                epoch: (k + 1) as f64 / spe as f64,
            };
            self.curve.push((k + 1, loss));
            self.log.push(serde_json::to_string(&log).map_err(|e| TrainError::Invalid(e.to_string()))?);
            if !on(&Progress::Step(log, total)) {
                return Err(self.stopped(k + 1, "stopped by the caller"));
            }
            let last = k + 1 == total;
            if self.eval.is_some() && (last || self.cfg.eval_every.is_some_and(|n| n > 0 && (k + 1).is_multiple_of(n))) {
                if let Some(e) = self.evaluate()? {
                    self.eval_curve.push((k + 1, e));
                    self.log.push(format!("{{\"step\":{},\"eval_loss\":{e}}}", k + 1));
                    if !on(&Progress::Eval { step: k + 1, eval_loss: e }) {
                        return Err(self.stopped(k + 1, "stopped by the caller"));
                    }
                }
            }
            self.write_log()?;
            if self.cfg.save_every.is_some_and(|n| n > 0 && (k + 1).is_multiple_of(n)) && !last {
                let dir = self.save_checkpoint()?;
                if !on(&Progress::Saved(dir)) {
                    return Err(self.stopped(k + 1, "stopped by the caller"));
                }
            }
        }
        Ok(())
    }

    /// The error for a run stopped at `step`, naming the last checkpoint.
    fn stopped(&self, step: usize, why: &str) -> TrainError {
        let kept = self.last_checkpoint().map_or("no checkpoint was saved".to_string(), |p| format!("the last checkpoint, {}, is kept", p.display()));
        TrainError::Invalid(format!("training stopped at step {step}: {why}; no adapter was written to {} ({kept})", self.out.display()))
    }

    fn last_checkpoint(&self) -> Option<PathBuf> {
        let mut best: Option<(usize, PathBuf)> = None;
        for e in std::fs::read_dir(&self.out).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_prefix("checkpoint-").and_then(|s| s.parse::<usize>().ok()) {
                if e.path().join("trainer_state.json").is_file() && best.as_ref().is_none_or(|b| n > b.0) {
                    best = Some((n, e.path()));
                }
            }
        }
        best.map(|b| b.1)
    }

    fn write_log(&self) -> Result<()> {
        let mut text = self.log.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&self.out.join("trainer_log.jsonl"), text.as_bytes())?;
        write_atomic(&self.out.join("loss.svg"), loss_svg(&self.curve, &self.eval_curve).as_bytes())
    }

    /// Write `checkpoint-N/` (adapter, optimizer moments, state, log so far).
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let dir = self.out.join(format!("checkpoint-{}", self.step));
        let tmp = self.out.join(format!(".checkpoint-{}.partial", self.step));
        let _ = std::fs::remove_dir_all(&tmp);
        self.lora.save(&tmp, "", "")?;
        let mut named: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for (k, (m, v)) in self.opt.m.iter().zip(&self.opt.v).enumerate() {
            named.push((format!("m.{k}"), vec![m.len()], m));
            named.push((format!("v.{k}"), vec![v.len()], v));
        }
        write_atomic(&tmp.join("optimizer.safetensors"), &safetensors_bytes(&named)?)?;
        let st = CheckpointState {
            step: self.step,
            total_steps: self.total_steps(),
            seed: self.cfg.seed,
            rank: self.lora.spec.rank,
            targets: self.lora.spec.targets.to_vec(),
            model: model_identity(self.model),
        };
        let text = serde_json::to_string_pretty(&st).map_err(|e| TrainError::Invalid(e.to_string()))?;
        write_atomic(&tmp.join("trainer_state.json"), text.as_bytes())?;
        let mut log = std::fs::File::create(tmp.join("trainer_log.jsonl")).map_err(|e| TrainError::Io(tmp.display().to_string(), e))?;
        for l in &self.log {
            writeln!(log, "{l}").map_err(|e| TrainError::Io(tmp.display().to_string(), e))?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| TrainError::Io(dir.display().to_string(), e))?;
        Ok(dir)
    }

    /// Write the final adapter, model card and loss curve into the output folder.
    pub fn save_final(&self, base_model: &str, architecture: &str, card: &str) -> Result<()> {
        self.lora.save(&self.out, base_model, architecture)?;
        self.write_log()?;
        write_atomic(&self.out.join("README.md"), card.as_bytes())
    }
}
