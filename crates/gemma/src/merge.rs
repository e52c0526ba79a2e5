//! `gemma merge`: fold a LoRA adapter into the base weights (`W + s·B·A`,
//! computed in f32 from the dequantized base) and write the merged model —
//! a Hugging Face folder for a float type from a Hugging Face base, else a
//! GGUF file in the requested type (llama.cpp's mixes, as `gemma quantize`)
//! — then measure what merging into that type costs in perplexity against
//! the unmerged adapter applied at run time.

use crate::quantize::{write_gguf, QuantPlan};
use crate::{Gemma, LoadOptions};
use gemma_core::{DType, GemmaError, Matrix, Result, Storage};
use gemma_model::tensors::{Form, Tensor};
use gemma_model::weights::Naming;
use std::path::{Path, PathBuf};

/// A paragraph scored when no text is given (about 180 tokens).
pub const DEFAULT_PPL_TEXT: &str = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg \
combined movable metal type, oil-based ink and a wooden press adapted from those used for wine and olive oil. Within fifty years \
printing shops had spread to more than two hundred cities across Europe, and millions of books had been produced. The price of \
books fell, literacy rose, and scholars could compare identical copies of a text for the first time. Newspapers, pamphlets and \
scientific journals followed, changing how ideas travelled and how quickly arguments could be answered. Historians still debate \
how much of the Reformation, the scientific revolution and the rise of national languages can be traced to the press, but few \
doubt that it was one of the most important inventions of its age.";

/// What [`merge`] wrote and measured.
#[derive(Debug, Clone)]
pub struct MergeReport {
    /// The file or folder written.
    pub out: PathBuf,
    /// `"gguf"` or `"hf"`.
    pub format: &'static str,
    /// Projections merged.
    pub merged: usize,
    /// Scored tokens.
    pub tokens: usize,
    /// Perplexity of the base with the adapter applied at run time.
    pub ppl_adapter: f64,
    /// Perplexity of the merged model as written.
    pub ppl_merged: f64,
}

/// Fold `g.model.lora` into the weights (merged matrices become f32) and drop the adapter.
pub fn fold_lora(g: &mut Gemma) -> Result<usize> {
    let Some(lora) = g.model.lora.take() else { return Err(GemmaError::invalid("lora", "no adapter to merge")) };
    let mut merged = 0;
    for (lw, ll) in g.model.weights.layers.iter_mut().zip(&lora.layers) {
        let mats = [&mut lw.q, &mut lw.k, &mut lw.v, &mut lw.o, &mut lw.gate, &mut lw.up, &mut lw.down];
        for (m, pair) in mats.into_iter().zip(&ll.parts) {
            // A KV-sharing layer (Gemma 3n/4) computes no keys or values:
            // PEFT still trains their unused projections; they change nothing.
            let (Some(p), true) = (pair, m.rows > 0) else { continue };
            let (a, b) = (gemma_quant::to_f32_vec(&p.a.storage), gemma_quant::to_f32_vec(&p.b.storage));
            let (r, fin, fout) = (p.a.rows, p.a.cols, p.b.rows);
            let mut w = gemma_quant::to_f32_vec(&m.storage);
            for o in 0..fout {
                let row = &mut w[o * fin..(o + 1) * fin];
                for k in 0..r {
                    let c = p.scale * b[o * r + k];
                    row.iter_mut().zip(&a[k * fin..(k + 1) * fin]).for_each(|(x, &ak)| *x += c * ak);
                }
            }
            *m = Matrix::new(fout, fin, Storage::F32(w));
            merged += 1;
        }
    }
    Ok(merged)
}

/// Perplexity of `g` on `text`.
fn ppl(g: &Gemma, text: &str) -> Result<(usize, f64)> {
    let ids = g.tokenizer.encode(text, false)?;
    let windows = gemma_generate::windows_with_bos(&ids, g.tokenizer.bos_id, 512.min(g.model.config.max_position_embeddings))?;
    let p = gemma_generate::perplexity(&g.model, &windows, &mut |_, _| {})?;
    Ok((p.tokens, p.ppl))
}

/// Merge the adapter at `lora` into the model at `input` and write `out` in `dtype`.
pub fn merge(input: &Path, lora: &Path, out: &Path, dtype: &str, ppl_text: &str) -> Result<MergeReport> {
    let plan = QuantPlan::parse(dtype)?;
    let mut g = Gemma::load_with(input, &LoadOptions { lora: Some(lora.to_path_buf()), ..Default::default() }, &mut |_, _| {})?;
    let (tokens, ppl_adapter) = ppl(&g, ppl_text)?;
    let merged = fold_lora(&mut g)?;
    let hf = input.is_dir() && !plan.base.is_quantized();
    let format = if hf {
        write_hf(&g, input, out, plan.base)?;
        "hf"
    } else {
        if out.is_dir() {
            return Err(GemmaError::invalid("out", format!("{} is a folder; a merged {} model is one GGUF file (give a .gguf path)", out.display(), plan.name)));
        }
        write_gguf(&g, input, &plan, out, &mut |_, _| {})?;
        "gguf"
    };
    let back = Gemma::load(out)?;
    let (_, ppl_merged) = ppl(&back, ppl_text)?;
    Ok(MergeReport { out: out.to_path_buf(), format, merged, tokens, ppl_adapter, ppl_merged })
}

/// A Hugging Face folder: config and tokenizer files copied from `input`,
/// `model.safetensors` in `dtype` (f32, bf16 or f16) with the checkpoint's
/// names and `w` (not `1 + w`) norms.
fn write_hf(g: &Gemma, input: &Path, out: &Path, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| GemmaError::io(out, e))?;
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "chat_template.json"] {
        let src = input.join(f);
        if src.is_file() {
            std::fs::copy(&src, out.join(f)).map_err(|e| GemmaError::io(&src, e))?;
        }
    }
    let cfg = &g.model.config;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mat = |m: &Matrix| gemma_quant::to_f32_vec(&m.storage);
    g.model.weights.visit(&mut |s, l, t| {
        let name = |i| Naming::HuggingFace { prefix: "model." }.name(s.part, i, cfg.sandwich_norms);
        match t {
            Tensor::Matrix(m) => tensors.push((name(l), vec![m.rows, m.cols], mat(m))),
            // Hugging Face names each AltUp stream projection on its own.
            Tensor::Stack(ms) if s.form == Form::Streams => {
                for (i, m) in ms.iter().enumerate() {
                    tensors.push((name(i), vec![m.rows, m.cols], mat(m)));
                }
            }
            Tensor::Stack(ms) => {
                let (rows, cols) = ms.first().map_or((0, 0), |m| (m.rows, m.cols));
                tensors.push((name(l), vec![ms.len(), rows, cols], ms.iter().flat_map(mat).collect()));
            }
            // Norms are held as the gain applied: files store `w` (`1 + w` applied for Gemma 1–3).
            Tensor::Vector(v) if s.form == Form::Norm => tensors.push((name(l), vec![v.len()], v.iter().map(|x| x - cfg.norm_offset).collect())),
            Tensor::Vector(v) => tensors.push((name(l), (s.shape)(cfg, l).unwrap_or_else(|| vec![v.len()]), v.to_vec())),
        }
    });
    use safetensors::tensor::{Dtype, TensorView};
    let (st_dtype, bytes): (Dtype, Vec<Vec<u8>>) = match dtype {
        DType::F32 => (Dtype::F32, tensors.iter().map(|t| t.2.iter().flat_map(|x| x.to_le_bytes()).collect()).collect()),
        DType::BF16 => (Dtype::BF16, tensors.iter().map(|t| t.2.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect()).collect()),
        DType::F16 => (Dtype::F16, tensors.iter().map(|t| t.2.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()).collect()),
        other => return Err(GemmaError::invalid("dtype", format!("a Hugging Face folder holds f32, bf16 or f16 weights, not {other}"))),
    };
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| TensorView::new(st_dtype, t.1.clone(), b).map(|v| (t.0.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| GemmaError::invalid("safetensors", e.to_string()))?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(views, Some(meta)).map_err(|e| GemmaError::invalid("safetensors", e.to_string()))?;
    let path = out.join("model.safetensors");
    std::fs::write(&path, data).map_err(|e| GemmaError::io(&path, e))
}
