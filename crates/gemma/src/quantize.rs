//! `gemma quantize`: write a GGUF file (llama.cpp's layout and metadata for
//! the `gemma`, `gemma2` and `gemma3` architectures) from any model gemma-rs
//! loads, with every weight matrix re-quantized to the requested type.

use crate::{Gemma, LoadOptions};
use gemma_core::{DType, GemmaError, Matrix, Result};
use gemma_formats::{GgufValue, GgufWriter};
use gemma_model::weights::{Naming, Part};
use gemma_model::{AttentionKind, Family};
use gemma_tokenizer::Backend;
use std::collections::BTreeMap;
use std::path::Path;

/// Which type each tensor gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantPlan {
    /// Type of most matrices.
    pub base: DType,
    /// llama.cpp's per-tensor rules of a k-quant mix (which tensors get more bits).
    pub mix: Mix,
    /// Type of the token embedding (also the tied output head).
    pub embed: DType,
    /// The name the user gave.
    pub name: String,
}

/// The k-quant mixes whose per-tensor rules differ from "everything `base`"
/// (llama.cpp's `llama_tensor_get_type` for dense models, restated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every matrix gets `base` (plain types, `q5_k_s`).
    Uniform,
    /// `q2_k`: attn_v Q4_K (Q3_K with fewer than 4 query heads per KV head), ffn_down and attn_output Q3_K.
    Q2K,
    /// `q3_k_m`: attn_v Q5_K in layers 0–1 else Q4_K; ffn_down Q5_K in the first 1/16 of layers else Q4_K; attn_output Q4_K.
    Q3KM,
    /// `q4_k_s`: attn_v Q5_K in layers 0–3; ffn_down Q5_K in the first 1/8 of layers.
    Q4KS,
    /// `q4_k_m` / `q5_k_m`: attn_v and ffn_down Q6_K in the layers that get more bits.
    Q6KMore,
}

impl QuantPlan {
    /// Parse `q8_0`, `q4_k`, `f16`, … or a llama.cpp mix name (`q4_k_m`).
    pub fn parse(s: &str) -> Result<Self> {
        let l = s.to_ascii_lowercase();
        let mix = |base, mix, embed| Ok(Self { base, mix, embed, name: l.clone() });
        match l.as_str() {
            "q4_k_m" => mix(DType::Q4_K, Mix::Q6KMore, DType::Q6_K),
            "q4_k_s" => mix(DType::Q4_K, Mix::Q4KS, DType::Q6_K),
            "q5_k_m" => mix(DType::Q5_K, Mix::Q6KMore, DType::Q6_K),
            "q5_k_s" => mix(DType::Q5_K, Mix::Uniform, DType::Q6_K),
            "q3_k_m" => mix(DType::Q3_K, Mix::Q3KM, DType::Q6_K),
            "q2_k" => mix(DType::Q2_K, Mix::Q2K, DType::Q6_K),
            // As llama.cpp: the (tied) output head gets Q6_K unless the
            // whole file is Q8_0 or float.
            _ => match DType::from_name(&l) {
                Some(d) if d.is_quantized() && d != DType::Q8_0 => mix(d, Mix::Uniform, DType::Q6_K),
                Some(d) => mix(d, Mix::Uniform, d),
                None => Err(GemmaError::invalid(
                    "type",
                    format!("unknown quantization type `{s}` (q8_0, q4_0, q4_1, q5_0, q5_1, q3_k, q4_k, q5_k, q6_k, q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m, q2_k, f16, bf16, f32)"),
                )),
            },
        }
    }

    /// The type for matrix `part` of layer `layer` (of `n_layers`) with
    /// `cols` columns, in a model with `gqa` query heads per KV head: the
    /// mix's rule, then llama.cpp's fallback when rows are not whole blocks.
    pub fn type_for(&self, part: Part, layer: usize, n_layers: usize, cols: usize, gqa: usize) -> DType {
        use DType::{Q3_K, Q4_K, Q5_K, Q6_K};
        let more = layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer + n_layers - n_layers / 8) % 3 == 2;
        let base = self.base;
        let want = match (part, self.mix) {
            (Part::Embed | Part::LmHead, _) => self.embed,
            (Part::V, Mix::Q2K) => {
                if gqa >= 4 {
                    Q4_K
                } else {
                    Q3_K
                }
            }
            (Part::V, Mix::Q3KM) => {
                if layer < 2 {
                    Q5_K
                } else {
                    Q4_K
                }
            }
            (Part::V, Mix::Q4KS) => {
                if layer < 4 {
                    Q5_K
                } else {
                    base
                }
            }
            (Part::Down, Mix::Q2K) | (Part::O, Mix::Q2K) => Q3_K,
            (Part::Down, Mix::Q3KM) => {
                if layer < n_layers / 16 {
                    Q5_K
                } else {
                    Q4_K
                }
            }
            (Part::Down, Mix::Q4KS) => {
                if layer < n_layers / 8 {
                    Q5_K
                } else {
                    base
                }
            }
            (Part::O, Mix::Q3KM) => Q4_K,
            (Part::V | Part::Down, Mix::Q6KMore) if more => Q6_K,
            _ => base,
        };
        fallback(want, cols)
    }
}

pub use gemma_quant::fallback;

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct QuantReport {
    /// Tensors written.
    pub tensors: usize,
    /// File size in bytes.
    pub bytes: u64,
    /// How many tensors got each type.
    pub type_counts: BTreeMap<String, usize>,
}

fn u32v(x: usize) -> GgufValue {
    GgufValue::U32(x as u32)
}

/// Load `input` and write it to `out` as GGUF quantized by `plan`.
pub fn quantize_to_gguf(input: &Path, plan: &QuantPlan, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<QuantReport> {
    let g = Gemma::load_with(input, &LoadOptions::default(), &mut |_, _| {})?;
    write_gguf(&g, input, plan, out, progress)
}

/// Write the loaded model `g` (from `input`, whose tokenizer metadata is
/// copied) to `out` as GGUF quantized by `plan`.
pub fn write_gguf(g: &Gemma, input: &Path, plan: &QuantPlan, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<QuantReport> {
    let c = &g.model.config;
    let arch = match c.family {
        Family::Gemma1 => "gemma",
        Family::Gemma2 => "gemma2",
        Family::Gemma3 => "gemma3",
        Family::Gemma4 | Family::Gemma3n => {
            return Err(GemmaError::Unsupported(format!(
                "writing {} as GGUF (llama.cpp's {} layout) is not done yet; run the Hugging Face folder, optionally with --dtype",
                c.family.name(),
                if c.family == Family::Gemma4 { "gemma4" } else { "gemma3n" }
            )))
        }
    };
    let mut w = GgufWriter::new();
    let k = |s: &str| format!("{arch}.{s}");
    w.set("general.architecture", GgufValue::String(arch.into()));
    w.set("general.name", GgufValue::String(input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()));
    w.set("general.quantization_version", GgufValue::U32(2));
    w.set(&k("context_length"), u32v(c.max_position_embeddings));
    w.set(&k("embedding_length"), u32v(c.hidden_size));
    w.set(&k("block_count"), u32v(c.num_layers()));
    w.set(&k("feed_forward_length"), u32v(c.intermediate_size));
    w.set(&k("attention.head_count"), u32v(c.num_heads));
    w.set(&k("attention.head_count_kv"), u32v(c.num_kv_heads));
    w.set(&k("attention.key_length"), u32v(c.head_dim));
    w.set(&k("attention.value_length"), u32v(c.head_dim));
    w.set(&k("attention.layer_norm_rms_epsilon"), GgufValue::F32(c.rms_norm_eps));
    let global = c.layers.iter().find(|l| l.attention == AttentionKind::Global).unwrap_or(&c.layers[0]);
    w.set(&k("rope.freq_base"), GgufValue::F32(global.rope_theta as f32));
    if global.rope_linear_factor != 1.0 {
        w.set(&k("rope.scaling.type"), GgufValue::String("linear".into()));
        w.set(&k("rope.scaling.factor"), GgufValue::F32(global.rope_linear_factor as f32));
    }
    if let Some(local) = c.layers.iter().find(|l| l.attention.is_sliding()) {
        if let AttentionKind::Sliding { window } = local.attention {
            w.set(&k("attention.sliding_window"), u32v(window));
        }
        if c.family == Family::Gemma3 {
            if local.rope_theta != 10_000.0 {
                w.set(&k("rope.freq_base_swa"), GgufValue::F32(local.rope_theta as f32));
            }
            // GGUF expresses the layer pattern as "every p-th layer is global".
            let pattern = (1..=c.num_layers())
                .find(|&p| c.layers.iter().enumerate().all(|(i, l)| l.attention.is_sliding() == ((i + 1) % p != 0)))
                .ok_or_else(|| GemmaError::Unsupported("this model's sliding/global layer pattern cannot be written to GGUF".into()))?;
            if pattern != 6 {
                w.set(&k("attention.sliding_window_pattern"), u32v(pattern));
            }
        }
    }
    if c.family != Family::Gemma1 {
        let scalar = c.attn_scale.powi(-2) as f64;
        if (scalar - gemma_model::gguf::default_query_pre_attn_scalar(c)).abs() > 1e-3 {
            w.set(&k("attention.scale"), GgufValue::F32(c.attn_scale));
        }
    }
    if let Some(cap) = c.attn_softcap {
        w.set(&k("attn_logit_softcapping"), GgufValue::F32(cap));
    }
    if let Some(cap) = c.final_softcap {
        w.set(&k("final_logit_softcapping"), GgufValue::F32(cap));
    }
    write_tokenizer(g, input, &mut w)?;

    // Tensors.
    let naming = Naming::Gguf;
    let n_layers = c.num_layers();
    let gqa = c.num_heads / c.num_kv_heads.max(1);
    let total = 1 + 7 * n_layers + usize::from(g.model.weights.lm_head.is_some());
    let mut done = 0;
    let mut report = QuantReport::default();
    let mut add_matrix = |w: &mut GgufWriter, report: &mut QuantReport, name: String, m: &Matrix, t: DType| -> Result<()> {
        let values = gemma_quant::to_f32_vec(&m.storage);
        let mut data = Vec::with_capacity(t.bytes_for(values.len()));
        gemma_quant::quantize(t, &values, &mut data)?;
        w.add_tensor(&name, vec![m.cols as u64, m.rows as u64], t, data)?;
        *report.type_counts.entry(t.to_string()).or_default() += 1;
        report.tensors += 1;
        done += 1;
        progress(done, total);
        Ok(())
    };
    let add_norm = |w: &mut GgufWriter, report: &mut QuantReport, name: String, gain: &[f32]| -> Result<()> {
        // GGUF norms hold the gain 1 + w, which is what we keep in memory.
        let mut data = Vec::with_capacity(gain.len() * 4);
        gemma_quant::quantize(DType::F32, gain, &mut data)?;
        w.add_tensor(&name, vec![gain.len() as u64], DType::F32, data)?;
        *report.type_counts.entry("f32".into()).or_default() += 1;
        report.tensors += 1;
        Ok(())
    };
    let wts = &g.model.weights;
    let sandwich = c.sandwich_norms;
    add_matrix(&mut w, &mut report, naming.name(Part::Embed, 0, sandwich), &wts.embed, plan.type_for(Part::Embed, 0, n_layers, c.hidden_size, gqa))?;
    for (i, l) in wts.layers.iter().enumerate() {
        let name = |p| naming.name(p, i, sandwich);
        add_norm(&mut w, &mut report, name(Part::AttnNorm), &l.attn_norm)?;
        add_norm(&mut w, &mut report, name(Part::FfnNorm), &l.ffn_norm)?;
        for (p, v) in
            [(Part::PostAttnNorm, &l.post_attn_norm), (Part::PostFfnNorm, &l.post_ffn_norm), (Part::QNorm, &l.q_norm), (Part::KNorm, &l.k_norm)]
        {
            if let Some(v) = v {
                add_norm(&mut w, &mut report, name(p), v)?;
            }
        }
        for (p, m) in
            [(Part::Q, &l.q), (Part::K, &l.k), (Part::V, &l.v), (Part::O, &l.o), (Part::Gate, &l.gate), (Part::Up, &l.up), (Part::Down, &l.down)]
        {
            add_matrix(&mut w, &mut report, name(p), m, plan.type_for(p, i, n_layers, m.cols, gqa))?;
        }
    }
    add_norm(&mut w, &mut report, naming.name(Part::FinalNorm, 0, sandwich), &wts.final_norm)?;
    if let Some(head) = &wts.lm_head {
        add_matrix(&mut w, &mut report, naming.name(Part::LmHead, 0, sandwich), head, plan.type_for(Part::LmHead, 0, n_layers, c.hidden_size, gqa))?;
    }
    w.write(out)?;
    report.bytes = std::fs::metadata(out).map_err(|e| GemmaError::io(out, e))?.len();
    Ok(report)
}

/// Tokenizer metadata: copied from a GGUF input; from a Hugging Face
/// tokenizer.json, the vocabulary in id order with SentencePiece-style
/// scores (-id: earlier pieces merge first) and token types.
fn write_tokenizer(g: &Gemma, input: &Path, w: &mut GgufWriter) -> Result<()> {
    let t = &g.tokenizer;
    if let Backend::Spm(_) = t.backend() {
        let src = gemma_formats::GgufFile::open(input)?;
        for (key, value) in &src.header.metadata {
            if key.starts_with("tokenizer.") {
                w.set(key, value.clone());
            }
        }
        return Ok(());
    }
    let n = t.vocab_size();
    let mut tokens = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for id in 0..n as u32 {
        let s = t.id_to_token(id).unwrap_or_default();
        let kind = if s.len() == 6 && s.starts_with("<0x") && s.ends_with('>') {
            6
        } else if t.is_control(id) {
            3
        } else {
            1
        };
        tokens.push(GgufValue::String(s));
        scores.push(GgufValue::F32(-(id as f32)));
        types.push(GgufValue::I32(kind));
    }
    w.set("tokenizer.ggml.model", GgufValue::String("llama".into()));
    w.set("tokenizer.ggml.pre", GgufValue::String("default".into()));
    w.set("tokenizer.ggml.tokens", GgufValue::Array(tokens));
    w.set("tokenizer.ggml.scores", GgufValue::Array(scores));
    w.set("tokenizer.ggml.token_type", GgufValue::Array(types));
    w.set("tokenizer.ggml.bos_token_id", GgufValue::U32(t.bos_id));
    if let Some(eos) = t.token_to_id(&t.eos_token) {
        w.set("tokenizer.ggml.eos_token_id", GgufValue::U32(eos));
    }
    for (key, tok) in [("tokenizer.ggml.unknown_token_id", "<unk>"), ("tokenizer.ggml.padding_token_id", "<pad>")] {
        if let Some(id) = t.token_to_id(tok) {
            w.set(key, GgufValue::U32(id));
        }
    }
    w.set("tokenizer.ggml.add_bos_token", GgufValue::Bool(t.add_bos));
    w.set("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
    w.set("tokenizer.ggml.add_space_prefix", GgufValue::Bool(false));
    if !t.chat_template.builtin {
        w.set("tokenizer.chat_template", GgufValue::String(t.chat_template.source.clone()));
    }
    Ok(())
}
