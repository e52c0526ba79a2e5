//! Sentence embeddings (EmbeddingGemma): the model's final-normed hidden
//! states through the sentence-transformers modules shipped beside it
//! (`modules.json`: Pooling, Dense…, Normalize), with its named prompts
//! (`config_sentence_transformers.json`) and Matryoshka truncation.
//!
//! Without `modules.json` the hidden states are mean-pooled and
//! L2-normalized.

use gemma_core::{GemmaError, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// How token vectors become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over all tokens (the prompt included, as EmbeddingGemma's `include_prompt`).
    Mean,
    /// The first token's vector.
    Cls,
    /// The last token's vector.
    LastToken,
    /// Element-wise maximum.
    Max,
}

/// A sentence-transformers `Dense` layer: `act(W·x + b)`.
#[derive(Debug, Clone)]
struct Dense {
    /// `[out, in]`.
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    fin: usize,
    fout: usize,
    tanh: bool,
}

/// The sentence-transformers pipeline after the transformer.
#[derive(Debug, Clone)]
pub struct SentenceModules {
    /// Pooling of the token vectors.
    pub pooling: Pooling,
    dense: Vec<Dense>,
    /// L2-normalize at the end.
    pub normalize: bool,
    /// Named prompts prepended to the text (`query`, `document`, …).
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when none is named.
    pub default_prompt: Option<String>,
    /// Longest input in tokens (`sentence_bert_config.json`).
    pub max_seq_length: Option<usize>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| GemmaError::format(path, format!("invalid JSON: {e}")))
}

impl Default for SentenceModules {
    /// Mean pooling and L2 normalization, no prompts.
    fn default() -> Self {
        Self { pooling: Pooling::Mean, dense: Vec::new(), normalize: true, prompts: BTreeMap::new(), default_prompt: None, max_seq_length: None }
    }
}

impl SentenceModules {
    /// Read `folder`'s modules (None when it has no `modules.json`).
    pub fn load(folder: &Path) -> Result<Option<Self>> {
        let mpath = folder.join("modules.json");
        if !mpath.is_file() {
            return Ok(None);
        }
        let modules = read_json(&mpath)?;
        let list = modules.as_array().ok_or_else(|| GemmaError::format(&mpath, "expected a list of modules"))?;
        let mut m = Self { normalize: false, ..Self::default() };
        let mut saw_transformer = false;
        for (i, e) in list.iter().enumerate() {
            let ty = e.get("type").and_then(Value::as_str).ok_or_else(|| GemmaError::format(&mpath, format!("module {i} has no 'type'")))?;
            let dir = folder.join(e.get("path").and_then(Value::as_str).unwrap_or(""));
            let kind = ty.rsplit('.').next().unwrap_or(ty);
            match kind {
                "Transformer" if i == 0 => saw_transformer = true,
                "Pooling" => m.pooling = pooling(&dir.join("config.json"))?,
                "Dense" => m.dense.push(dense(&dir)?),
                "Normalize" => m.normalize = true,
                _ => return Err(GemmaError::Unsupported(format!("{}: sentence-transformers module `{ty}` (module {i})", mpath.display()))),
            }
        }
        if !saw_transformer {
            return Err(GemmaError::format(&mpath, "the first module must be the Transformer"));
        }
        let cst = folder.join("config_sentence_transformers.json");
        if cst.is_file() {
            let c = read_json(&cst)?;
            if let Some(p) = c.get("prompts").and_then(Value::as_object) {
                m.prompts = p.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
            }
            m.default_prompt = c.get("default_prompt_name").and_then(Value::as_str).map(String::from);
        }
        let sb = folder.join("sentence_bert_config.json");
        if sb.is_file() {
            m.max_seq_length = read_json(&sb)?.get("max_seq_length").and_then(Value::as_u64).map(|n| n as usize);
        }
        Ok(Some(m))
    }

    /// The output width, given the transformer's hidden size.
    pub fn dimensions(&self, hidden: usize) -> usize {
        self.dense.last().map_or(hidden, |d| d.fout)
    }

    /// Token vectors `[n, hidden]` → one embedding.
    pub fn apply(&self, tokens: &[f32], hidden: usize) -> Result<Vec<f32>> {
        let n = tokens.len() / hidden;
        let rows = || tokens.chunks_exact(hidden);
        let mut x: Vec<f32> = match self.pooling {
            Pooling::Mean => {
                let mut s = vec![0f64; hidden];
                rows().for_each(|r| s.iter_mut().zip(r).for_each(|(a, &b)| *a += b as f64));
                s.iter().map(|&v| (v / n.max(1) as f64) as f32).collect()
            }
            Pooling::Cls => tokens[..hidden].to_vec(),
            Pooling::LastToken => tokens[(n - 1) * hidden..].to_vec(),
            Pooling::Max => rows().fold(vec![f32::NEG_INFINITY; hidden], |mut m, r| {
                m.iter_mut().zip(r).for_each(|(a, &b)| *a = a.max(b));
                m
            }),
        };
        for d in &self.dense {
            if x.len() != d.fin {
                return Err(GemmaError::invalid("Dense", format!("a layer takes {} features, its input has {}", d.fin, x.len())));
            }
            let mut y: Vec<f32> = d.w.chunks_exact(d.fin).map(|row| row.iter().zip(&x).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32).collect();
            if let Some(b) = &d.bias {
                y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
            if d.tanh {
                y.iter_mut().for_each(|v| *v = v.tanh());
            }
            x = y;
        }
        if self.normalize {
            normalize(&mut x);
        }
        Ok(x)
    }
}

/// `x / max(‖x‖, 1e-12)`.
pub fn normalize(x: &mut [f32]) {
    let norm = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt().max(1e-12);
    x.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
}

/// A Pooling config, old keys (`pooling_mode_mean_tokens: true`) or new (`pooling_mode: "mean"`).
fn pooling(path: &Path) -> Result<Pooling> {
    let c = read_json(path)?;
    if c.get("include_prompt").and_then(Value::as_bool) == Some(false) {
        return Err(GemmaError::Unsupported(format!("{}: include_prompt false (pooling without the prompt tokens)", path.display())));
    }
    let flag = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mode = c.get("pooling_mode").and_then(Value::as_str).map(String::from).or_else(|| {
        [("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"), ("pooling_mode_lasttoken", "lasttoken"), ("pooling_mode_max_tokens", "max")]
            .iter()
            .find(|(k, _)| flag(k))
            .map(|(_, m)| m.to_string())
    });
    match mode.as_deref() {
        Some("mean") => Ok(Pooling::Mean),
        Some("cls") => Ok(Pooling::Cls),
        Some("lasttoken") => Ok(Pooling::LastToken),
        Some("max") => Ok(Pooling::Max),
        other => Err(GemmaError::Unsupported(format!("{}: pooling mode {other:?}", path.display()))),
    }
}

/// A Dense module folder: `config.json` and `model.safetensors` (`linear.weight`, `linear.bias`).
fn dense(dir: &Path) -> Result<Dense> {
    let cpath = dir.join("config.json");
    let c = read_json(&cpath)?;
    let size = |k: &str| c.get(k).and_then(Value::as_u64).map(|n| n as usize).ok_or_else(|| GemmaError::format(&cpath, format!("missing '{k}'")));
    let (fin, fout) = (size("in_features")?, size("out_features")?);
    let act = c.get("activation_function").and_then(Value::as_str).unwrap_or("torch.nn.modules.linear.Identity");
    let tanh = match act.rsplit('.').next().unwrap_or(act) {
        "Identity" => false,
        "Tanh" => true,
        _ => return Err(GemmaError::Unsupported(format!("{}: Dense activation `{act}`", cpath.display()))),
    };
    let st = gemma_formats::SafetensorsSet::open_files(&[dir.join("model.safetensors")])?;
    let (shape, w) = st.load("linear.weight")?;
    if shape != [fout, fin] {
        return Err(GemmaError::ShapeMismatch { name: format!("{}/linear.weight", dir.display()), expected: vec![fout, fin], found: shape });
    }
    let bias = if c.get("bias").and_then(Value::as_bool).unwrap_or(true) {
        let (bshape, b) = st.load("linear.bias")?;
        if bshape != [fout] {
            return Err(GemmaError::ShapeMismatch { name: format!("{}/linear.bias", dir.display()), expected: vec![fout], found: bshape });
        }
        Some(gemma_quant::to_f32_vec(&b))
    } else {
        None
    };
    Ok(Dense { w: gemma_quant::to_f32_vec(&w), bias, fin, fout, tanh })
}

/// Consecutive groups of inputs (by their lengths) holding at most `budget`
/// tokens each; an input longer than `budget` is a group of its own.
pub fn batches(lens: &[usize], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut total) = (0, 0);
    for (i, &n) in lens.iter().enumerate() {
        if i > start && total + n > budget {
            out.push(start..i);
            (start, total) = (i, 0);
        }
        total += n;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::batches;

    #[test]
    fn batches_respect_the_budget() {
        assert_eq!(batches(&[3, 3, 3], 6), vec![0..2, 2..3]);
        assert_eq!(batches(&[10, 1, 1], 4), vec![0..1, 1..3]);
        assert_eq!(batches(&[1, 10, 1], 4), vec![0..1, 1..2, 2..3]);
        assert_eq!(batches(&[], 4), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(batches(&[4, 4], 8), vec![0..2]);
    }
}
