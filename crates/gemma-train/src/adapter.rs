//! The adapter being trained: one [`LoraParam`] per targeted projection,
//! initialized as PEFT does (A Kaiming-uniform, B zero) or from a PEFT
//! folder, and written back as PEFT writes it (`adapter_config.json` +
//! `adapter_model.safetensors`, f32, `base_model.model.model.layers.N.…`).

use crate::ops::linear::LoraParam;
use gemma_core::rng::Rng;
use crate::{Result, TrainError};
use gemma_core::{Matrix, Storage};
use gemma_model::lora::{LayerLora, LoraAdapter, LoraPair};
use gemma_model::tensors::{spec as tensor_spec, Proj};
use gemma_model::GemmaConfig;
use serde_json::{json, Value};
use std::path::Path;

/// Rank, scale and targets of a LoRA adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank `r`.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// rsLoRA scaling (`alpha / √r`).
    pub rslora: bool,
    /// Which of the seven projections ([`Proj::ALL`] order) are adapted.
    pub targets: [bool; 7],
    /// Dropout on the LoRA input while training.
    pub dropout: f32,
}

impl LoraSpec {
    /// `alpha / r` or `alpha / √r`.
    pub fn scale(&self) -> f32 {
        (if self.rslora { self.alpha / (self.rank as f64).sqrt() } else { self.alpha / self.rank as f64 }) as f32
    }

    /// Parse `--targets`: `all-linear` or a comma list of projection names.
    pub fn parse_targets(s: &str) -> Result<[bool; 7]> {
        if s == "all-linear" || s == "all" {
            return Ok([true; 7]);
        }
        let mut t = [false; 7];
        for name in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let p = Proj::from_peft(name).ok_or_else(|| {
                let known: Vec<&str> = Proj::ALL.iter().map(|p| p.peft_name()).collect();
                TrainError::Invalid(format!("target '{name}' matches no module of a Gemma block (known: all-linear, {})", known.join(", ")))
            })?;
            t[p.index()] = true;
        }
        if !t.iter().any(|&x| x) {
            return Err(TrainError::Invalid("no LoRA targets given".into()));
        }
        Ok(t)
    }
}

/// The trainable adapter.
#[derive(Debug, Clone)]
pub struct TrainableLora {
    /// Rank, scale, targets.
    pub spec: LoraSpec,
    /// Per layer, per projection.
    pub layers: Vec<[Option<LoraParam>; 7]>,
}

impl TrainableLora {
    /// A fresh adapter: A ~ U(−1/√in, 1/√in) (PEFT's `kaiming_uniform_(a=√5)`), B = 0.
    pub fn init(cfg: &GemmaConfig, spec: LoraSpec, seed: u64) -> Result<Self> {
        if spec.rank == 0 {
            return Err(TrainError::Invalid("LoRA rank must be at least 1".into()));
        }
        let mut rng = Rng::new(seed ^ 0x4C6F_5241);
        let layers = (0..cfg.num_layers())
            .map(|l| {
                std::array::from_fn(|p| {
                    // As PEFT: only projections the layer has (KV-sharing
                    // layers have no k/v, `attention_k_eq_v` layers no v).
                    let present = (tensor_spec(Proj::ALL[p].part()).shape)(cfg, l).is_some();
                    (spec.targets[p] && present).then(|| {
                        let (fin, fout) = Proj::ALL[p].features(cfg, l);
                        let bound = 1.0 / (fin as f32).sqrt();
                        let a = (0..spec.rank * fin).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect();
                        param(spec.rank, fin, fout, spec.scale(), a, vec![0.0; fout * spec.rank])
                    })
                })
            })
            .collect();
        Ok(Self { spec, layers })
    }

    /// Start from a PEFT adapter folder (`--init-lora`, `--resume`).
    pub fn load(dir: &Path, cfg: &GemmaConfig, dropout: f32) -> Result<Self> {
        let adapter = LoraAdapter::load(dir, cfg)?;
        let cpath = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cpath).map_err(|e| TrainError::Io(cpath.display().to_string(), e))?;
        let c: Value = serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("{}: {e}", cpath.display())))?;
        let for_pattern = ["rank_pattern", "alpha_pattern"].iter().any(|k| c.get(*k).and_then(Value::as_object).is_some_and(|m| !m.is_empty()));
        if for_pattern {
            return Err(TrainError::Invalid(format!("{}: rank_pattern/alpha_pattern adapters cannot be trained further", cpath.display())));
        }
        let rank = c.get("r").and_then(Value::as_u64).unwrap_or(0) as usize;
        let alpha = c.get("lora_alpha").and_then(Value::as_f64).unwrap_or(0.0);
        let rslora = c.get("use_rslora").and_then(Value::as_bool).unwrap_or(false);
        let mut targets = [false; 7];
        let layers: Vec<[Option<LoraParam>; 7]> = adapter
            .layers
            .iter()
            .map(|l| {
                std::array::from_fn(|p| {
                    l.parts[p].as_ref().map(|pair| {
                        targets[p] = true;
                        let f = |m: &Matrix| gemma_quant::to_f32_vec(&m.storage);
                        param(pair.a.rows, pair.a.cols, pair.b.rows, pair.scale, f(&pair.a), f(&pair.b))
                    })
                })
            })
            .collect();
        Ok(Self { spec: LoraSpec { rank, alpha, rslora, targets, dropout }, layers })
    }

    /// The adapter as the forward applies it.
    pub fn to_adapter(&self) -> LoraAdapter {
        let layers = self
            .layers
            .iter()
            .map(|l| LayerLora {
                parts: std::array::from_fn(|p| {
                    l[p].as_ref().map(|q| LoraPair {
                        a: Matrix::new(q.r, q.fin, Storage::F32(q.a.clone())),
                        b: Matrix::new(q.fout, q.r, Storage::F32(q.b.clone())),
                        scale: q.scale,
                    })
                }),
            })
            .collect();
        LoraAdapter { layers, source: "training".into() }
    }

    /// Every parameter pair, in a fixed order.
    pub fn params(&self) -> impl Iterator<Item = &LoraParam> {
        self.layers.iter().flat_map(|l| l.iter().flatten())
    }

    /// Every parameter pair, mutably, in the order of [`TrainableLora::params`].
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut LoraParam> {
        self.layers.iter_mut().flat_map(|l| l.iter_mut().flatten())
    }

    /// Number of trainable values.
    pub fn count(&self) -> usize {
        self.params().map(|p| p.a.len() + p.b.len()).sum()
    }

    /// Zero every gradient.
    pub fn zero_grad(&mut self) {
        for p in self.params_mut() {
            p.ga.fill(0.0);
            p.gb.fill(0.0);
        }
    }

    /// PEFT's tensor name stem of projection slot `p` in layer `l`: the
    /// table's Hugging Face name under `base_model.model.`, without `.weight`.
    pub fn stem(l: usize, p: usize) -> String {
        let name = tensor_spec(Proj::ALL[p].part()).hf_name("model.", l);
        format!("base_model.model.{}", name.strip_suffix(".weight").unwrap_or(&name))
    }

    /// Named tensors `(name, shape, values)` as PEFT names them; `grads`
    /// gives the gradients instead of the weights.
    pub fn tensors(&self, grads: bool) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (p, q) in layer.iter().enumerate() {
                if let Some(q) = q {
                    let stem = Self::stem(l, p);
                    let (a, b) = if grads { (&q.ga, &q.gb) } else { (&q.a, &q.b) };
                    out.push((format!("{stem}.lora_A.weight"), vec![q.r, q.fin], &a[..]));
                    out.push((format!("{stem}.lora_B.weight"), vec![q.fout, q.r], &b[..]));
                }
            }
        }
        out
    }

    /// Write `adapter_config.json` and `adapter_model.safetensors` into `dir`
    /// (each through a temporary file, so a crash never leaves a half file).
    pub fn save(&self, dir: &Path, base_model: &str, architecture: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Io(dir.display().to_string(), e))?;
        let targets: Vec<&str> = Proj::ALL.iter().zip(self.spec.targets).filter(|(_, t)| *t).map(|(p, _)| p.peft_name()).collect();
        let config = json!({
            "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": base_model, "bias": "none",
            "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "layer_replication": null,
            "layers_pattern": null, "layers_to_transform": null, "loftq_config": {}, "lora_alpha": self.spec.alpha,
            "lora_bias": false, "lora_dropout": self.spec.dropout, "megatron_config": null, "megatron_core": "megatron.core",
            "modules_to_save": null, "peft_type": "LORA", "r": self.spec.rank, "rank_pattern": {}, "revision": null,
            "target_modules": targets, "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": self.spec.rslora,
            "gemma_rs": {"architecture": architecture}
        });
        let text = serde_json::to_string_pretty(&config).map_err(|e| TrainError::Invalid(e.to_string()))?;
        write_atomic(&dir.join("adapter_config.json"), text.as_bytes())?;
        write_atomic(&dir.join("adapter_model.safetensors"), &safetensors_bytes(&self.tensors(false))?)
    }
}

fn param(r: usize, fin: usize, fout: usize, scale: f32, a: Vec<f32>, b: Vec<f32>) -> LoraParam {
    LoraParam { r, fin, fout, scale, ga: vec![0.0; a.len()], gb: vec![0.0; b.len()], a, b }
}

/// f32 tensors as a safetensors file (metadata `format: pt`, as PEFT writes).
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, &[f32])]) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (name.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Invalid(format!("safetensors: {e}")))?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| TrainError::Invalid(format!("safetensors: {e}")))
}

/// Write `path` through `path.tmp` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::Io(tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::Io(path.display().to_string(), e))
}
