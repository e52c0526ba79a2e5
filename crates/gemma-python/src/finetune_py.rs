//! `gemma_rs.finetune`: LoRA/QLoRA training with transformers' and PEFT's
//! keyword names, as `gemma finetune` runs it (`gemma::finetune`).

use crate::errors::to_py;
use crate::gemma_py::PyGemma;
use gemma::finetune::{FinetuneOptions, FinetuneReport};
use gemma::train::data::LossMask;
use gemma::train::optim::{AdamW, Schedule};
use gemma::train::trainer::{Progress, TrainConfig};
use gemma::train::{LoraSpec, TrainError};
use gemma::Gemma;
use pyo3::exceptions::{PyFileNotFoundError, PyIOError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Arc;

/// A training error as its Python exception.
fn train_err(e: TrainError) -> PyErr {
    match e {
        TrainError::Model(m) => to_py(m),
        TrainError::Io(what, io) if io.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(format!("{what}: {io}")),
        TrainError::Io(what, io) => PyIOError::new_err(format!("{what}: {io}")),
        TrainError::Invalid(m) => PyValueError::new_err(m),
    }
}

/// The dict a callback receives for `p`.
fn progress_dict<'py>(py: Python<'py>, p: &Progress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match p {
        Progress::Step(s, total) => {
            d.set_item("step", s.step)?;
            d.set_item("total_steps", total)?;
            d.set_item("loss", s.loss)?;
            d.set_item("learning_rate", s.learning_rate)?;
            d.set_item("grad_norm", s.grad_norm)?;
            d.set_item("tokens", s.tokens)?;
            d.set_item("tokens_per_second", s.tokens_per_second)?;
            d.set_item("epoch", s.epoch)?;
        }
        Progress::Eval { step, eval_loss } => {
            d.set_item("step", step)?;
            d.set_item("eval_loss", eval_loss)?;
        }
        Progress::Saved(dir) => d.set_item("checkpoint", dir.display().to_string())?,
    }
    Ok(d)
}

/// Train a LoRA adapter of `model` (a `Gemma`, or what `Gemma()` takes) on
/// `data` (JSONL: `text`, `prompt`/`completion` or `messages` per line) into
/// `out` (a PEFT folder). Keywords follow transformers' `TrainingArguments`
/// and PEFT's `LoraConfig`. `callback(dict)` hears every step (`step`,
/// `total_steps`, `loss`, `learning_rate`, `grad_norm`, `tokens_per_second`,
/// `epoch`), evaluation (`eval_loss`) and checkpoint; returning False stops
/// the run (`RuntimeError`, no adapter written), as does Ctrl-C
/// (`KeyboardInterrupt`). Returns a summary dict.
#[pyfunction]
#[pyo3(signature = (model, data, out, *, eval_data=None, learning_rate=2e-4, num_train_epochs=1, max_steps=None,
    per_device_train_batch_size=8, gradient_accumulation_steps=1, warmup_steps=0, lr_scheduler_type="linear",
    weight_decay=0.0, max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, seed=42, r=16,
    lora_alpha=32.0, lora_dropout=0.0, target_modules=None, use_rslora=false, max_length=None, packing=false,
    gradient_checkpointing=false, eval_steps=None, save_steps=None, loss="auto", init_lora=None,
    resume_from_checkpoint=None, callback=None))]
#[allow(clippy::too_many_arguments)] // Python's keywords
pub fn finetune<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    data: PathBuf,
    out: PathBuf,
    eval_data: Option<PathBuf>,
    learning_rate: f64,
    num_train_epochs: usize,
    max_steps: Option<usize>,
    per_device_train_batch_size: usize,
    gradient_accumulation_steps: usize,
    warmup_steps: usize,
    lr_scheduler_type: &str,
    weight_decay: f64,
    max_grad_norm: f64,
    adam_beta1: f64,
    adam_beta2: f64,
    adam_epsilon: f64,
    seed: u64,
    r: usize,
    lora_alpha: f64,
    lora_dropout: f32,
    target_modules: Option<&Bound<'py, PyAny>>,
    use_rslora: bool,
    max_length: Option<usize>,
    packing: bool,
    gradient_checkpointing: bool,
    eval_steps: Option<usize>,
    save_steps: Option<usize>,
    loss: &str,
    init_lora: Option<PathBuf>,
    resume_from_checkpoint: Option<PathBuf>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let gemma: Arc<Gemma> = match model.downcast::<PyGemma>() {
        Ok(g) => g.get().shared(),
        Err(_) => {
            let spec: String = model.extract().map_err(|_| PyTypeError::new_err("model must be a Gemma or a model name/path"))?;
            PyGemma::new(py, Some(spec), None, None, None, None, None)?.shared()
        }
    };
    let targets = match target_modules {
        None => "all-linear".to_string(),
        Some(t) => match t.extract::<String>() {
            Ok(s) => s,
            Err(_) => t.extract::<Vec<String>>().map_err(|_| PyTypeError::new_err("target_modules must be a string or a list of module names"))?.join(","),
        },
    };
    let bad = |what: &str, v: &str, known: &str| PyValueError::new_err(format!("{what}: unknown `{v}` ({known})"));
    let schedule = Schedule::parse(lr_scheduler_type).ok_or_else(|| bad("lr_scheduler_type", lr_scheduler_type, "linear, cosine, constant"))?;
    let mask = LossMask::parse(loss).ok_or_else(|| bad("loss", loss, "auto, all, completion-only, assistant-only"))?;
    if r == 0 || per_device_train_batch_size == 0 || gradient_accumulation_steps == 0 || num_train_epochs == 0 {
        return Err(PyValueError::new_err("r, per_device_train_batch_size, gradient_accumulation_steps and num_train_epochs must be at least 1"));
    }
    let o = FinetuneOptions {
        data,
        eval_data,
        out,
        lora: LoraSpec { rank: r, alpha: lora_alpha, rslora: use_rslora, targets: LoraSpec::parse_targets(&targets).map_err(train_err)?, dropout: lora_dropout },
        init_lora,
        loss: mask,
        max_length,
        train: TrainConfig {
            lr: learning_rate,
            schedule,
            warmup_steps,
            adam: AdamW { beta1: adam_beta1, beta2: adam_beta2, eps: adam_epsilon, weight_decay },
            max_grad_norm,
            epochs: num_train_epochs,
            max_steps,
            batch_size: per_device_train_batch_size,
            grad_accum: gradient_accumulation_steps,
            packing,
            max_length: 0,
            seed,
            eval_every: eval_steps,
            save_every: save_steps,
            gradient_checkpointing,
        },
        resume: resume_from_checkpoint,
        base_model: String::new(),
        targets,
    };
    let mut failure: Option<PyErr> = None;
    let result = py.detach(|| -> Result<FinetuneReport, TrainError> {
        gemma::finetune::finetune(
            &gemma,
            &o,
            &mut |p| {
                Python::attach(|py| {
                    let go = py.check_signals().and_then(|()| match &callback {
                        Some(cb) => {
                            // False stops; None (no return) and anything else go on.
                            let r = cb.call1(py, (progress_dict(py, p)?,))?;
                            let r = r.bind(py);
                            Ok(!r.is_instance_of::<pyo3::types::PyBool>() || r.is_truthy()?)
                        }
                        None => Ok(true),
                    });
                    go.unwrap_or_else(|e| {
                        failure = Some(e);
                        false
                    })
                })
            },
            &mut |_| {},
        )
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let r = result.map_err(|e| match e {
        TrainError::Invalid(m) if m.contains("stopped by the caller") => pyo3::exceptions::PyRuntimeError::new_err(m),
        other => train_err(other),
    })?;
    let d = PyDict::new(py);
    d.set_item("steps", r.steps)?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("tokens", r.tokens)?;
    d.set_item("tokens_per_second", r.tokens as f64 / r.seconds.max(1e-9))?;
    d.set_item("first_loss", r.first_loss)?;
    d.set_item("last_loss", r.last_loss)?;
    d.set_item("eval_loss", r.eval_loss)?;
    d.set_item("examples", r.examples)?;
    d.set_item("trainable_parameters", r.trainable)?;
    Ok(d)
}
