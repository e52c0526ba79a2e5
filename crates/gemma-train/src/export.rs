//! `gemma export-lora`: a PEFT adapter as llama.cpp's GGUF LoRA file
//! (`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`,
//! tensors `blk.N.attn_q.weight.lora_a` `[in, r]` and `.lora_b` `[r, out]`
//! in ggml's dimension order, f32) for `llama-cli --lora`. llama.cpp scales
//! by `alpha / r`; an rsLoRA adapter's alpha is written as `alpha·√r` so the
//! scale stays `alpha / √r`.

use gemma_model::gguf_keys as keys;
use crate::{Result, TrainError};
use gemma_core::DType;
use gemma_formats::{GgufValue, GgufWriter, SafetensorsSet};
use gemma_model::tensors::{spec, Proj};
use serde_json::Value;
use std::path::Path;

/// llama.cpp's name of a PEFT projection (`q_proj`) in layer `l`, from the tensor table.
fn gguf_name(proj: &str, l: usize) -> Option<String> {
    Proj::from_peft(proj).map(|p| spec(p.part()).gguf_name(l))
}

/// The GGUF architecture of the adapter's base (`arch` overrides).
fn architecture(c: &Value, arch: Option<&str>) -> Result<String> {
    if let Some(a) = arch {
        return Ok(a.to_string());
    }
    let class = c.pointer("/auto_mapping/base_model_class").and_then(Value::as_str).or_else(|| c.pointer("/gemma_rs/architecture").and_then(Value::as_str)).unwrap_or("");
    let name = c.get("base_model_name_or_path").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
    let l = class.to_ascii_lowercase();
    // Most specific first: "gemma3n" and "gemma-3n" also contain the Gemma 3 spellings.
    let has = |keys: &[&str]| keys.iter().any(|k| l.contains(k) || name.contains(k));
    Ok(if has(&["gemma3n", "gemma-3n"]) {
        "gemma3n"
    } else if has(&["gemma4", "gemma-4"]) {
        "gemma4"
    } else if l.contains("gemma3") || name.contains("gemma-3") || name.contains("gemma3") {
        "gemma3"
    } else if l.contains("gemma2") || name.contains("gemma-2") || name.contains("gemma2") {
        "gemma2"
    } else if l.contains("gemma1") || l == "gemmaforcausallm" || name.contains("gemma-") {
        "gemma"
    } else {
        return Err(TrainError::Invalid("cannot tell the adapter's base architecture from adapter_config.json; pass --arch gemma, gemma2, gemma3, gemma3n or gemma4".into()));
    }
    .to_string())
}

/// Write the adapter in `dir` to `out`; returns the number of adapted projections.
pub fn export_gguf_lora(dir: &Path, out: &Path, arch: Option<&str>) -> Result<usize> {
    let cpath = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cpath).map_err(|e| TrainError::Io(cpath.display().to_string(), e))?;
    let c: Value = serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("{}: {e}", cpath.display())))?;
    if c.get("peft_type").and_then(Value::as_str) != Some("LORA") {
        return Err(TrainError::Invalid(format!("{}: not a LoRA adapter (peft_type)", cpath.display())));
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if c.get(k).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
            return Err(TrainError::Invalid(format!("{}: {k} cannot be expressed in llama.cpp's one-alpha LoRA format", cpath.display())));
        }
    }
    if c.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(TrainError::Invalid(format!("{}: DoRA adapters have no llama.cpp form", cpath.display())));
    }
    let r = c.get("r").and_then(Value::as_u64).ok_or_else(|| TrainError::Invalid(format!("{}: no integer 'r'", cpath.display())))? as f64;
    let mut alpha = c.get("lora_alpha").and_then(Value::as_f64).ok_or_else(|| TrainError::Invalid(format!("{}: no 'lora_alpha'", cpath.display())))?;
    if c.get("use_rslora").and_then(Value::as_bool) == Some(true) {
        alpha *= r.sqrt();
    }
    let arch = architecture(&c, arch)?;
    let wpath = dir.join("adapter_model.safetensors");
    let st = SafetensorsSet::open_files(std::slice::from_ref(&wpath))?;
    let mut w = GgufWriter::new();
    w.set(keys::GENERAL_ARCHITECTURE, GgufValue::String(arch));
    w.set(keys::GENERAL_TYPE, GgufValue::String("adapter".into()));
    w.set(keys::GENERAL_NAME, GgufValue::String(dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()));
    w.set(keys::ADAPTER_TYPE, GgufValue::String("lora".into()));
    w.set(keys::ADAPTER_LORA_ALPHA, GgufValue::F32(alpha as f32));
    let mut names: Vec<String> = st.tensors().map(|t| t.name.clone()).collect();
    names.sort();
    let mut count = 0;
    for name in names {
        let (stem, which) = if let Some(s) = name.strip_suffix(".lora_A.weight") {
            (s, "lora_a")
        } else if let Some(s) = name.strip_suffix(".lora_B.weight") {
            (s, "lora_b")
        } else {
            return Err(TrainError::Invalid(format!("{}: unexpected tensor '{name}'", wpath.display())));
        };
        let mut it = stem.rsplit('.');
        let (proj, _block, idx, tag) = (it.next(), it.next(), it.next(), it.next());
        let (Some(proj), Some(idx), Some("layers")) = (proj, idx, tag) else {
            return Err(TrainError::Invalid(format!("{}: cannot place '{name}' in a layer", wpath.display())));
        };
        let l: usize = idx.parse().map_err(|_| TrainError::Invalid(format!("{}: bad layer index in '{name}'", wpath.display())))?;
        let base = gguf_name(proj, l).ok_or_else(|| TrainError::Invalid(format!("{}: LoRA on '{proj}' has no llama.cpp name", wpath.display())))?;
        let (shape, storage) = st.load(&name)?;
        let [rows, cols] = shape[..] else {
            return Err(TrainError::Invalid(format!("{}: '{name}' is not a matrix", wpath.display())));
        };
        let values = gemma_quant::to_f32_vec(&storage);
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add_tensor(&format!("{base}.{which}"), vec![cols as u64, rows as u64], DType::F32, data)?;
        if which == "lora_a" {
            count += 1;
        }
    }
    if count == 0 {
        return Err(TrainError::Invalid(format!("{}: no LoRA weights", wpath.display())));
    }
    w.write(out)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each generation's PEFT config gets llama.cpp's architecture name;
    /// Gemma 3n (whose names also spell "gemma3") is not labeled gemma3.
    #[test]
    fn architecture_of_each_generation() {
        let cases = [
            (r#"{"auto_mapping": {"base_model_class": "Gemma3nForConditionalGeneration"}}"#, "gemma3n"),
            (r#"{"base_model_name_or_path": "google/gemma-3n-E2B-it"}"#, "gemma3n"),
            (r#"{"auto_mapping": {"base_model_class": "Gemma4ForConditionalGeneration"}}"#, "gemma4"),
            (r#"{"base_model_name_or_path": "google/gemma-4-E4B-it"}"#, "gemma4"),
            (r#"{"base_model_name_or_path": "google/gemma-3-270m"}"#, "gemma3"),
            (r#"{"auto_mapping": {"base_model_class": "Gemma2ForCausalLM"}}"#, "gemma2"),
            (r#"{"auto_mapping": {"base_model_class": "GemmaForCausalLM"}}"#, "gemma"),
        ];
        for (json, want) in cases {
            let c: Value = serde_json::from_str(json).unwrap();
            assert_eq!(architecture(&c, None).unwrap(), want, "{json}");
        }
        assert!(architecture(&serde_json::json!({}), None).is_err());
        assert_eq!(architecture(&serde_json::json!({}), Some("gemma3n")).unwrap(), "gemma3n");
    }
}
