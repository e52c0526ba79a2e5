//! `gemma quantize`: write a GGUF file (llama.cpp's layout and metadata for
//! the `gemma`, `gemma2` and `gemma3` architectures) from any model gemma-rs
//! loads, with every weight matrix re-quantized to the requested type.

use gemma_model::gguf_keys as keys;
use crate::{Gemma, LoadOptions};
use gemma_core::{DType, GemmaError, Matrix, Result};
use gemma_formats::{GgufValue, GgufWriter};
use gemma_model::tensors::{spec, Part, QuantClass, Tensor};
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
    let name = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut w = GgufWriter::new();
    model_metadata(c, &name, plan, &mut w)?;
    write_tokenizer(g, input, &mut w)?;
    let mut report = write_tensors(c, &g.model.weights, plan, &mut w, None, progress)?;
    w.write(out)?;
    report.bytes = std::fs::metadata(out).map_err(|e| GemmaError::io(out, e))?.len();
    Ok(report)
}

/// llama.cpp's architecture name of a generation.
pub(crate) fn arch_name(f: Family) -> &'static str {
    match f {
        Family::Gemma1 => "gemma",
        Family::Gemma2 => "gemma2",
        Family::Gemma3 => "gemma3",
        Family::Gemma4 => "gemma4",
        Family::Gemma3n => "gemma3n",
    }
}

/// `general.*` and the architecture's hyperparameters of `c`.
pub(crate) fn model_metadata(c: &gemma_model::GemmaConfig, name: &str, plan: &QuantPlan, w: &mut GgufWriter) -> Result<()> {
    let arch = arch_name(c.family);
    w.set(keys::GENERAL_ARCHITECTURE, GgufValue::String(arch.into()));
    w.set(keys::GENERAL_NAME, GgufValue::String(name.into()));
    w.set(keys::GENERAL_QUANTIZATION_VERSION, GgufValue::U32(2));
    if let Some(ft) = gemma_formats::file_type_value(&plan.name) {
        w.set(keys::GENERAL_FILE_TYPE, GgufValue::U32(ft));
    }
    match c.family {
        Family::Gemma4 => crate::gguf_gemma4_write::metadata(c, w),
        Family::Gemma3n => crate::gguf_gemma3n_write::metadata(c, w),
        _ => uniform_metadata(c, arch, w),
    }
}

/// The hyperparameters of a Gemma 1–3 model under `{arch}.`.
fn uniform_metadata(c: &gemma_model::GemmaConfig, arch: &str, w: &mut GgufWriter) -> Result<()> {
    let k = |s: &str| format!("{arch}.{s}");
    w.set(&k(keys::CONTEXT_LENGTH), u32v(c.max_position_embeddings));
    w.set(&k(keys::EMBEDDING_LENGTH), u32v(c.hidden_size));
    w.set(&k(keys::BLOCK_COUNT), u32v(c.num_layers()));
    w.set(&k(keys::FEED_FORWARD_LENGTH), u32v(c.intermediate_size));
    w.set(&k(keys::HEAD_COUNT), u32v(c.num_heads));
    w.set(&k(keys::HEAD_COUNT_KV), u32v(c.num_kv_heads));
    w.set(&k(keys::KEY_LENGTH), u32v(c.head_dim));
    w.set(&k(keys::VALUE_LENGTH), u32v(c.head_dim));
    w.set(&k(keys::RMS_EPSILON), GgufValue::F32(c.rms_norm_eps));
    let global = c.layers.iter().find(|l| l.attention == AttentionKind::Global).unwrap_or(&c.layers[0]);
    w.set(&k(keys::ROPE_FREQ_BASE), GgufValue::F32(global.rope_theta as f32));
    if global.rope_linear_factor != 1.0 {
        w.set(&k(keys::ROPE_SCALING_TYPE), GgufValue::String("linear".into()));
        w.set(&k(keys::ROPE_SCALING_FACTOR), GgufValue::F32(global.rope_linear_factor as f32));
    }
    if let Some(local) = c.layers.iter().find(|l| l.attention.is_sliding()) {
        if let AttentionKind::Sliding { window } = local.attention {
            w.set(&k(keys::SLIDING_WINDOW), u32v(window));
        }
        if c.family == Family::Gemma3 {
            if local.rope_theta != 10_000.0 {
                w.set(&k(keys::ROPE_FREQ_BASE_SWA), GgufValue::F32(local.rope_theta as f32));
            }
            // GGUF expresses the layer pattern as "every p-th layer is global".
            let pattern = (1..=c.num_layers())
                .find(|&p| c.layers.iter().enumerate().all(|(i, l)| l.attention.is_sliding() == ((i + 1) % p != 0)))
                .ok_or_else(|| GemmaError::Unsupported("this model's sliding/global layer pattern cannot be written to GGUF".into()))?;
            if pattern != 6 {
                w.set(&k(keys::SLIDING_WINDOW_PATTERN), u32v(pattern));
            }
        }
    }
    if c.family != Family::Gemma1 {
        let scalar = c.attn_scale.powi(-2) as f64;
        if (scalar - gemma_model::gguf::default_query_pre_attn_scalar(c)).abs() > 1e-3 {
            w.set(&k(keys::ATTENTION_SCALE), GgufValue::F32(c.attn_scale));
        }
    }
    if let Some(cap) = c.attn_softcap {
        w.set(&k(keys::ATTN_SOFTCAP), GgufValue::F32(cap));
    }
    if let Some(cap) = c.final_softcap {
        w.set(&k(keys::FINAL_SOFTCAP), GgufValue::F32(cap));
    }
    Ok(())
}

/// Tensors written so far, with their types.
struct TensorOut<'a> {
    w: &'a mut GgufWriter,
    /// Random blocks instead of the weights' values (`gemma synth`).
    random: Option<&'a crate::synth::RandomBlocks>,
    report: QuantReport,
    done: usize,
    total: usize,
    progress: &'a mut dyn FnMut(usize, usize),
}

impl TensorOut<'_> {
    /// A `[rows, cols]` matrix (or a stack of them, `[n, rows, cols]`) quantized to `t`.
    fn matrices(&mut self, name: String, ms: &[&Matrix], t: DType) -> Result<()> {
        let Some(first) = ms.first() else { return Ok(()) };
        let mut dims = vec![first.cols as u64, first.rows as u64];
        if ms.len() > 1 {
            dims.push(ms.len() as u64);
        }
        if let Some(r) = self.random {
            let n = ms.iter().map(|m| m.rows * m.cols).sum();
            self.w.add_tensor_fill(&name, dims, t, r.fill(t, n, self.done as u64)?)?;
        } else {
            let mut data = Vec::new();
            for m in ms {
                gemma_quant::quantize(t, &gemma_quant::to_f32_vec(&m.storage), &mut data)?;
            }
            self.w.add_tensor(&name, dims, t, data)?;
        }
        *self.report.type_counts.entry(t.to_string()).or_default() += 1;
        self.report.tensors += 1;
        self.done += 1;
        (self.progress)(self.done, self.total);
        Ok(())
    }

    /// A vector in f32 (norm gains as held in memory: `1 + w` for Gemma 1–3,
    /// which is what their GGUF files hold; `w` for Gemma 4, likewise).
    /// With random blocks: gains near 1 of `v`'s length.
    fn vector(&mut self, name: String, v: &[f32]) -> Result<()> {
        match self.random {
            Some(r) => self.exact_vector(name, &r.gains(v.len(), self.report.tensors as u64)),
            None => self.exact_vector(name, v),
        }
    }

    /// A vector in f32, as given also with random blocks (RoPE factors).
    fn exact_vector(&mut self, name: String, v: &[f32]) -> Result<()> {
        let mut data = Vec::with_capacity(v.len() * 4);
        gemma_quant::quantize(DType::F32, v, &mut data)?;
        self.w.add_tensor(&name, vec![v.len() as u64], DType::F32, data)?;
        *self.report.type_counts.entry("f32".into()).or_default() += 1;
        self.report.tensors += 1;
        Ok(())
    }
}

/// Every weight of `wts` as GGUF tensors, in the tensor table's order,
/// matrices quantized by `plan` (or, with `random`, random blocks of each
/// tensor's type and shape).
pub(crate) fn write_tensors(
    c: &gemma_model::GemmaConfig,
    wts: &gemma_model::Weights,
    plan: &QuantPlan,
    w: &mut GgufWriter,
    random: Option<&crate::synth::RandomBlocks>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantReport> {
    let n_layers = c.num_layers();
    let gqa = c.num_heads / c.num_kv_heads.max(1);
    let tensors = wts.tensors();
    let total = tensors.iter().filter(|(_, _, t)| !matches!(t, Tensor::Vector(_))).count();
    let mut out = TensorOut { w, random, report: QuantReport::default(), done: 0, total, progress };
    let type_of = |class: QuantClass, l: usize, cols: usize| match class {
        QuantClass::Embedding => plan.type_for(Part::Embed, 0, n_layers, cols, gqa),
        QuantClass::Head => plan.type_for(Part::LmHead, 0, n_layers, cols, gqa),
        QuantClass::Weight(role) => plan.type_for(role.part(), l, n_layers, cols, gqa),
        QuantClass::Float | QuantClass::Vector => DType::F32,
    };
    for (s, l, t) in tensors {
        let name = s.gguf_name(l);
        match t {
            Tensor::Vector(v) if s.quant == QuantClass::Vector => out.vector(name, v)?,
            // Small matrices held as f32 vectors (AltUp's coefficients).
            Tensor::Vector(v) => {
                let shape = (s.shape)(c, l).unwrap_or_default();
                let (rows, cols) = (shape.first().copied().unwrap_or(1), shape.get(1).copied().unwrap_or(v.len()));
                out.matrices(name, &[&Matrix::new(rows, cols, gemma_core::Storage::F32(v.to_vec()))], type_of(s.quant, l, cols))?;
            }
            Tensor::Matrix(m) if s.part == Part::PleEmbed && c.family == Family::Gemma3n => {
                let padded = gemma3n_padded_ple(c, m, random.is_some())?;
                let m = padded.as_ref().unwrap_or(m);
                out.matrices(name, &[m], type_of(s.quant, l, m.cols))?;
            }
            Tensor::Matrix(m) => out.matrices(name, &[m], type_of(s.quant, l, m.cols))?,
            Tensor::Stack(ms) => {
                let refs: Vec<&Matrix> = ms.iter().collect();
                out.matrices(name, &refs, type_of(s.quant, l, ms.first().map_or(0, |m| m.cols)))?;
            }
        }
        if s.part == Part::Embed && c.family == Family::Gemma4 {
            if let Some(f) = crate::gguf_gemma4_write::rope_freqs(c) {
                out.exact_vector(gemma_model::tensors::ROPE_FREQS.into(), &f)?;
            }
        }
        if s.part == Part::Q && c.family == Family::Gemma3n && wts.layers[l].k.rows == 0 {
            // llama.cpp's gemma3n loader wants K/V (unused) in every layer,
            // also the KV-sharing ones: zeros, and a unit K norm.
            let kv = c.layer_kv_dim(l);
            let zeros = Matrix::new(kv, c.hidden_size, gemma_core::Storage::F32(vec![0.0; kv * c.hidden_size]));
            out.matrices(spec(Part::K).gguf_name(l), &[&zeros], DType::F32)?;
            if wts.layers[l].k_norm.is_none() {
                out.vector(spec(Part::KNorm).gguf_name(l), &vec![1.0; c.layers[l].head_dim])?;
            }
            out.matrices(spec(Part::V).gguf_name(l), &[&zeros], DType::F32)?;
        }
    }
    Ok(out.report)
}

/// llama.cpp's gemma3n wants a per-layer embedding row for every token of
/// the whole vocabulary: the ids past the per-layer vocabulary get copies
/// of row 0, as transformers maps them to token 0 for this table. None
/// when the table already covers the vocabulary.
fn gemma3n_padded_ple(c: &gemma_model::GemmaConfig, embed: &Matrix, random: bool) -> Result<Option<Matrix>> {
    if embed.rows >= c.vocab_size {
        return Ok(None);
    }
    let (rows, cols) = (c.vocab_size, embed.cols);
    Ok(Some(if random {
        let bytes = gemma_core::Bytes::zeroed(rows * cols * 4).map_err(|e| GemmaError::Unsupported(format!("cannot reserve address space: {e}")))?;
        Matrix::new(rows, cols, gemma_core::Storage::Raw { dtype: DType::F32, len: rows * cols, bytes })
    } else {
        let mut v = gemma_quant::to_f32_vec(&embed.storage);
        let first = v[..cols].to_vec();
        while v.len() < rows * cols {
            v.extend_from_slice(&first);
        }
        Matrix::new(rows, cols, gemma_core::Storage::F32(v))
    }))
}

/// Tokenizer metadata: copied from a GGUF input; from a Hugging Face
/// tokenizer.json, the vocabulary in id order with SentencePiece-style
/// scores (-id: earlier pieces merge first) and token types.
fn write_tokenizer(g: &Gemma, input: &Path, w: &mut GgufWriter) -> Result<()> {
    let t = &g.tokenizer;
    if matches!(t.backend(), Backend::Spm(_)) || input.is_file() {
        let src = gemma_formats::GgufFile::open(input)?;
        for (key, value) in &src.header.metadata {
            if key.starts_with("tokenizer.") {
                w.set(key, value.clone());
            }
        }
        return Ok(());
    }
    if g.model.config.family == Family::Gemma4 {
        crate::gguf_gemma4_write::tokenizer(t, input, w)?;
        return special_tokens(g, w);
    }
    let (tokens, types) = pieces(t);
    // SentencePiece-style scores: earlier pieces merge first.
    let scores = (0..tokens.len()).map(|id| GgufValue::F32(-(id as f32))).collect();
    w.set(keys::TOKENIZER_MODEL, GgufValue::String("llama".into()));
    w.set(keys::TOKENIZER_PRE, GgufValue::String("default".into()));
    w.set(keys::TOKENIZER_TOKENS, GgufValue::Array(tokens));
    w.set(keys::TOKENIZER_SCORES, GgufValue::Array(scores));
    w.set(keys::TOKENIZER_TOKEN_TYPE, GgufValue::Array(types));
    special_tokens(g, w)
}

/// The vocabulary in id order and GGUF token types (6 byte, 3 control, 1 normal).
pub(crate) fn pieces(t: &gemma_tokenizer::GemmaTokenizer) -> (Vec<GgufValue>, Vec<GgufValue>) {
    let n = t.vocab_size();
    let (mut tokens, mut types) = (Vec::with_capacity(n), Vec::with_capacity(n));
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
        types.push(GgufValue::I32(kind));
    }
    (tokens, types)
}

/// Special-token ids, flags and the chat template.
fn special_tokens(g: &Gemma, w: &mut GgufWriter) -> Result<()> {
    let t = &g.tokenizer;
    w.set(keys::BOS_TOKEN_ID, GgufValue::U32(t.bos_id));
    if let Some(eos) = t.token_to_id(&t.eos_token) {
        w.set(keys::EOS_TOKEN_ID, GgufValue::U32(eos));
    }
    for (key, tok) in [(keys::UNKNOWN_TOKEN_ID, "<unk>"), (keys::PADDING_TOKEN_ID, "<pad>")] {
        if let Some(id) = t.token_to_id(tok) {
            w.set(key, GgufValue::U32(id));
        }
    }
    w.set(keys::ADD_BOS, GgufValue::Bool(t.add_bos));
    w.set(keys::ADD_EOS, GgufValue::Bool(false));
    w.set(keys::ADD_SPACE_PREFIX, GgufValue::Bool(false));
    if !t.chat_template.builtin {
        w.set(keys::CHAT_TEMPLATE, GgufValue::String(t.chat_template.source.clone()));
    }
    Ok(())
}
