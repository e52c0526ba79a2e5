//! Loss and LoRA gradients of one micro-batch: the model's training forward
//! ([`Model::forward_train`], which records a [`Tape`]), the fused head +
//! cross-entropy over the labeled rows, then each block's named steps
//! backwards ([`block`]: the forward's steps under the same names, each
//! generation's own steps included).

mod block;

use crate::adapter::TrainableLora;
use crate::ops::altup::collapse_backward_f32;
use crate::ops::cross_entropy::head_cross_entropy;
use crate::ops::norm::rms_norm_backward;
use crate::{Result, TrainError};
use block::{KvGrad, LayerGrad};
use gemma_kernels::rms_norm;
use gemma_model::lora::dropout_seed;
use gemma_model::tensors::Proj;
use gemma_model::{Model, Tape};

/// One training sequence: token ids and which of them are targets (a
/// target at `i` is predicted from position `i − 1`; position 0 never is).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids (BOS first).
    pub ids: Vec<u32>,
    /// `true` where the token is learned.
    pub targets: Vec<bool>,
}

impl Example {
    /// Number of learned tokens.
    pub fn count(&self) -> usize {
        self.targets.iter().skip(1).filter(|&&t| t).count()
    }
}

/// What [`loss_and_grad`] measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct MicroBatch {
    /// Σ of the cross-entropy of every target token (unweighted).
    pub loss_sum: f64,
    /// Number of target tokens.
    pub targets: usize,
    /// Tokens run through the model.
    pub tokens: usize,
}

/// Forward and backward over `batch`: adds `weight ·` (gradient of the
/// summed loss) to the adapter's gradients. The model is not changed: `lora`
/// rides on the sequences ([`Model::forward_train`]); `seed` is this
/// micro-batch's dropout seed. With `grad: false` only the loss is computed.
pub fn loss_and_grad(model: &Model, lora: &mut TrainableLora, batch: &[Example], weight: f32, seed: u64, tape: &mut Tape, grad: bool) -> Result<MicroBatch> {
    let cfg = &model.config;
    let hidden = cfg.hidden_size;
    let seqs: Vec<&[u32]> = batch.iter().map(|e| &e.ids[..]).collect();
    tape.dropout = if grad { lora.spec.dropout } else { 0.0 };
    tape.seed = seed;
    let timer = Timer::new();
    let adapter = lora.to_adapter();
    model.forward_train(&seqs, tape, Some(&adapter))?;
    timer.lap("forward");
    let n: usize = seqs.iter().map(|s| s.len()).sum();
    // Labeled rows: row of position i predicts ids[i + 1].
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (e, &(row0, len)) in batch.iter().zip(&tape.seqs) {
        for i in 0..len - 1 {
            if e.targets[i + 1] {
                rows.push(row0 + i);
                targets.push(e.ids[i + 1]);
            }
        }
    }
    let m = rows.len();
    let mut out = MicroBatch { loss_sum: 0.0, targets: m, tokens: n };
    if m == 0 {
        return Ok(out);
    }
    let mut xs = vec![0f32; m * hidden];
    for (k, &r) in rows.iter().enumerate() {
        xs[k * hidden..(k + 1) * hidden].copy_from_slice(&tape.x_out[r * hidden..(r + 1) * hidden]);
    }
    let mut hn = vec![0f32; m * hidden];
    rms_norm(&xs, &model.weights.final_norm, cfg.rms_norm_eps, &mut hn);
    let mut dhn = vec![0f32; m * hidden];
    let (_, losses) = head_cross_entropy(&hn, &targets, weight, model.weights.head(), cfg.final_softcap, &mut dhn);
    timer.lap("head + cross-entropy");
    out.loss_sum = losses.iter().sum();
    if !out.loss_sum.is_finite() {
        return Err(TrainError::Invalid(format!("the loss is {} (not finite)", out.loss_sum)));
    }
    if !grad {
        return Ok(out);
    }
    let eps = cfg.rms_norm_eps as f64;
    let mut dxs = vec![0f32; m * hidden];
    rms_norm_backward(&xs, &model.weights.final_norm, eps, &dhn, &mut dxs);
    let mut dx = vec![0f32; n * hidden];
    for (k, &r) in rows.iter().enumerate() {
        dx[r * hidden..(r + 1) * hidden].copy_from_slice(&dxs[k * hidden..(k + 1) * hidden]);
    }
    let drop = lora.spec.dropout;
    // Gradients of the keys and values a KV-sharing layer read from an
    // earlier layer's cache, waiting for that layer's backward.
    let mut shared_kv: Vec<Option<KvGrad>> = vec![None; cfg.num_layers()];
    // Gemma 3n: the gradient of all AltUp streams `[S, n, hidden]`, from the collapse.
    let mut streams = match &model.weights.altup {
        Some(a) => Some(collapse_backward_f32(&a.unembed, &tape.streams_out, hidden, &dx)),
        None => None,
    };
    for l in (0..cfg.num_layers()).rev() {
        let dr = |p: Proj| (drop > 0.0).then(|| (drop, dropout_seed(seed, l, p.index())));
        if tape.checkpointing {
            model.recompute_layer(l, &seqs, tape, Some(&adapter))?;
        }
        let mut g = LayerGrad { model, l, tape, lora: &mut lora.layers[l], dr: &dr, shared_kv: &mut shared_kv };
        match streams.as_mut() {
            Some(ds) => g.altup_layer(ds),
            None => g.block(&mut dx),
        }
        if tape.checkpointing {
            tape.layers[l].release();
        }
    }
    timer.lap("blocks backward");
    Ok(out)
}

/// Phase times on stderr when `GEMMA_TRAIN_PROFILE` is set.
struct Timer(Option<std::cell::Cell<std::time::Instant>>);

impl Timer {
    fn new() -> Self {
        Self(std::env::var_os("GEMMA_TRAIN_PROFILE").map(|_| std::cell::Cell::new(std::time::Instant::now())))
    }

    fn lap(&self, what: &str) {
        if let Some(t) = &self.0 {
            eprintln!("[profile] {what}: {:.3}s", t.get().elapsed().as_secs_f64());
            t.set(std::time::Instant::now());
        }
    }
}
