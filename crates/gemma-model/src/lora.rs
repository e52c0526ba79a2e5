//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`,
//! as `peft` saves them), applied at run time on top of any base weights —
//! float or quantized (the QLoRA arrangement): `y = W·x + s · B·(A·x)` with
//! `s = lora_alpha / r` (`/ √r` for rsLoRA).
//!
//! Supported: targets among the seven projections (`q_proj`, `k_proj`,
//! `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`), per-module
//! `rank_pattern`/`alpha_pattern`, `layers_to_transform`. Refused with a
//! clear error: DoRA, `fan_in_fan_out`, trained biases, `modules_to_save`,
//! other target modules, shapes that do not fit the model.

use crate::config::GemmaConfig;
use gemma_core::{GemmaError, Matrix, Result, Storage};
use gemma_formats::SafetensorsSet;
use serde_json::Value;
use std::path::Path;

pub use crate::tensors::Proj;

/// One low-rank update: `s · B·A`.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// `A` `[r, in]` (f32).
    pub a: Matrix,
    /// `B` `[out, r]` (f32).
    pub b: Matrix,
    /// `lora_alpha / r` (or `/ √r`).
    pub scale: f32,
}

/// A layer's updates, one slot per projection (see [`Proj::ALL`]).
#[derive(Debug, Clone, Default)]
pub struct LayerLora {
    /// `q, k, v, o, gate, up, down`.
    pub parts: [Option<LoraPair>; 7],
}

/// A loaded adapter: one entry per layer.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// Per-layer updates.
    pub layers: Vec<LayerLora>,
    /// Where it was loaded from.
    pub source: String,
}

fn bad(path: &Path, msg: impl Into<String>) -> GemmaError {
    GemmaError::format(path, msg.into())
}

/// The dropout seed of projection slot `p` ([`Proj::index`]) of layer `l`.
pub fn dropout_seed(seed: u64, l: usize, p: usize) -> u64 {
    splitmix(seed ^ splitmix(((l as u64) << 8) | p as u64))
}

/// Whether LoRA dropout with probability `p` keeps element `i` of the
/// input rows under `seed` (a counter-based draw, so the backward
/// regenerates the same mask without storing it).
pub fn dropout_keep(seed: u64, i: usize, p: f32) -> bool {
    let u = (splitmix(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40) as f32 / (1u64 << 24) as f32;
    u >= p
}

/// SplitMix64's finalizer.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl LoraAdapter {
    /// Load a PEFT LoRA folder for a model with config `cfg`.
    pub fn load(folder: &Path, cfg: &GemmaConfig) -> Result<Self> {
        let cpath = folder.join("adapter_config.json");
        let text = std::fs::read_to_string(&cpath).map_err(|e| GemmaError::io(&cpath, e))?;
        let c: Value = serde_json::from_str(&text).map_err(|e| bad(&cpath, format!("not valid JSON: {e}")))?;
        if c.get("peft_type").and_then(Value::as_str) != Some("LORA") {
            return Err(bad(&cpath, "peft_type must be \"LORA\""));
        }
        let flag = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
        for (k, why) in
            [("use_dora", "DoRA adapters"), ("fan_in_fan_out", "fan_in_fan_out (Conv1D-style) weights"), ("lora_bias", "trained LoRA biases")]
        {
            if flag(k) {
                return Err(bad(&cpath, format!("{why} are not supported")));
            }
        }
        if c.get("bias").and_then(Value::as_str).is_some_and(|b| b != "none") {
            return Err(bad(&cpath, "only bias \"none\" is supported"));
        }
        if c.get("modules_to_save").is_some_and(|m| !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(bad(&cpath, "modules_to_save (fully trained extra modules) is not supported"));
        }
        let r0 = c.get("r").and_then(Value::as_u64).ok_or_else(|| bad(&cpath, "missing integer 'r'"))? as usize;
        let alpha0 = c.get("lora_alpha").and_then(Value::as_f64).ok_or_else(|| bad(&cpath, "missing number 'lora_alpha'"))?;
        let rs = flag("use_rslora");
        let pattern = |k: &str, module: &str| -> Option<f64> {
            c.get(k)?
                .as_object()?
                .iter()
                .find(|(pat, _)| module.ends_with(pat.as_str()) || module.contains(&format!("{pat}.")))
                .and_then(|(_, v)| v.as_f64())
        };
        let wpath = folder.join("adapter_model.safetensors");
        if !wpath.is_file() {
            return Err(bad(folder, "no adapter_model.safetensors in the adapter folder"));
        }
        let st = SafetensorsSet::open_files(std::slice::from_ref(&wpath))?;
        let mut layers = vec![LayerLora::default(); cfg.num_layers()];
        let mut found = 0;
        for info in st.tensors() {
            let name = info.name.as_str();
            let Some(stem) = name.strip_suffix(".lora_A.weight") else {
                if name.ends_with(".lora_B.weight") {
                    continue;
                }
                return Err(bad(&wpath, format!("unexpected tensor '{name}' (only lora_A/lora_B weights of the projections are supported)")));
            };
            // …layers.{i}.{self_attn|mlp}.{proj}
            let mut it = stem.rsplit('.');
            let (proj, _block, idx, tag) = (it.next(), it.next(), it.next(), it.next());
            let (Some(proj), Some(idx), Some("layers")) = (proj, idx, tag) else {
                return Err(bad(&wpath, format!("cannot place '{name}' in a layer")));
            };
            let p = Proj::from_peft(proj).ok_or_else(|| bad(&wpath, format!("'{name}': LoRA on '{proj}' is not supported")))?;
            let l: usize = idx.parse().map_err(|_| bad(&wpath, format!("'{name}': bad layer index")))?;
            if l >= layers.len() {
                return Err(bad(&wpath, format!("'{name}': layer {l} but the model has {}", layers.len())));
            }
            if (crate::tensors::spec(p.part()).shape)(cfg, l).is_none() {
                return Err(bad(&wpath, format!("'{name}': layer {l} has no {proj} (it shares another layer's keys and values, or uses its keys as values)")));
            }
            let bname = format!("{stem}.lora_B.weight");
            let (ashape, a) = st.load(name)?;
            let (bshape, b) = st.load(&bname).map_err(|_| bad(&wpath, format!("'{name}' has no matching '{bname}'")))?;
            let (fin, fout) = p.features(cfg, l);
            let r = ashape.first().copied().unwrap_or(0);
            if ashape != [r, fin] || bshape != [fout, r] || r == 0 {
                return Err(bad(
                    &wpath,
                    format!("'{stem}': lora_A {ashape:?} and lora_B {bshape:?} do not fit the model's {proj} ({fout} × {fin}); expected [r, {fin}] and [{fout}, r]"),
                ));
            }
            let rank = pattern("rank_pattern", stem).map_or(r0, |v| v as usize);
            if rank != r {
                return Err(bad(&wpath, format!("'{stem}': rank {r} but adapter_config.json says {rank}")));
            }
            let alpha = pattern("alpha_pattern", stem).unwrap_or(alpha0);
            let scale = (if rs { alpha / (r as f64).sqrt() } else { alpha / r as f64 }) as f32;
            let f32s = |s: Storage| gemma_quant::convert(s, gemma_core::DType::F32);
            layers[l].parts[p.index()] = Some(LoraPair { a: Matrix::new(r, fin, f32s(a)?), b: Matrix::new(fout, r, f32s(b)?), scale });
            found += 1;
        }
        if found == 0 {
            return Err(bad(&wpath, "the adapter holds no LoRA weights"));
        }
        Ok(Self { layers, source: folder.display().to_string() })
    }

    /// Number of adapted projections.
    pub fn count(&self) -> usize {
        self.layers.iter().map(|l| l.parts.iter().flatten().count()).sum()
    }
}
