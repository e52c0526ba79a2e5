//! `generation_config.json`: the checkpoint's EOS ids and default sampling.

use crate::sampling::SamplingParams;
use gemma_core::{GemmaError, Result};
use serde_json::Value;
use std::path::Path;

/// Generation defaults shipped with a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// `do_sample`: false means greedy.
    pub do_sample: bool,
    /// Default temperature.
    pub temperature: Option<f32>,
    /// Default top-k.
    pub top_k: Option<usize>,
    /// Default top-p.
    pub top_p: Option<f32>,
    /// Default min-p.
    pub min_p: Option<f32>,
    /// Default repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Default `max_new_tokens`.
    pub max_new_tokens: Option<usize>,
}

impl GenerationConfig {
    /// Read `generation_config.json`; a missing file gives the defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(path, format!("invalid JSON: {e}")))?;
        let bad = |field: &str| GemmaError::format(path, format!("field `{field}` has the wrong type"));
        let f32_of = |k: &str| -> Result<Option<f32>> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(|x| Some(x as f32)).ok_or_else(|| bad(k)),
            }
        };
        let usize_of = |k: &str| -> Result<Option<usize>> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|x| Some(x as usize)).ok_or_else(|| bad(k)),
            }
        };
        let eos_token_ids = match v.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(Value::Number(n)) => vec![n.as_u64().ok_or_else(|| bad("eos_token_id"))? as u32],
            Some(Value::Array(a)) => a.iter().map(|x| x.as_u64().map(|x| x as u32).ok_or_else(|| bad("eos_token_id"))).collect::<Result<_>>()?,
            Some(_) => return Err(bad("eos_token_id")),
        };
        Ok(Self {
            eos_token_ids,
            do_sample: v.get("do_sample").and_then(Value::as_bool).unwrap_or(false),
            temperature: f32_of("temperature")?,
            top_k: usize_of("top_k")?,
            top_p: f32_of("top_p")?,
            min_p: f32_of("min_p")?,
            repetition_penalty: f32_of("repetition_penalty")?,
            max_new_tokens: usize_of("max_new_tokens")?,
        })
    }

    /// Default sampling parameters (greedy unless `do_sample`).
    pub fn sampling_params(&self, seed: u64) -> SamplingParams {
        let mut p = SamplingParams { seed, ..SamplingParams::default() };
        if self.do_sample {
            p.temperature = self.temperature.unwrap_or(1.0);
            p.top_k = self.top_k.unwrap_or(50);
            p.top_p = self.top_p.unwrap_or(1.0);
            p.min_p = self.min_p.unwrap_or(0.0);
        }
        p.repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        p
    }
}
