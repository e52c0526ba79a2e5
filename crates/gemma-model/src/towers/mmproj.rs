//! llama.cpp's split form of a multimodal Gemma 3 (Gemma 4's:
//! `mmproj_gemma4.rs`): the text model in one
//! GGUF, the vision tower and projector in an `mmproj` GGUF
//! (`general.architecture = "clip"`, `clip.projector_type = "gemma3"`).
//! Read into the same [`SiglipTower`] as a Hugging Face checkpoint, and
//! listed back out under llama.cpp's names for `gemma quantize` to write.
//!
//! Format quirks (as llama.cpp's `convert_hf_to_gguf.py --mmproj` writes
//! them): tensors under `v.*` and `mm.*`; the projector's norm gain is
//! stored as `1 + w`; the patch embedding is the 4-D convolution
//! `{p, p, c, hidden}`; the soft-token grid is `clip.vision.projector.scale_factor`
//! times smaller than the patch grid (4 when the key is absent).

use super::siglip::{SiglipConfig, SiglipTower, PROJECTION, PROJECTION_NORM, PROJECTOR_PREFIX};
use super::{VisionSpec, VisionTower};
use gemma_core::{GemmaError, Result, Storage};
use gemma_formats::{GgufFile, GgufValue};

/// `general.architecture` of an mmproj file.
pub const ARCH: &str = "clip";
/// `clip.projector_type` of Gemma 3's tower.
pub const PROJECTOR_GEMMA3: &str = "gemma3";
/// The prefix our loader reads the tower under.
const PREFIX: &str = "vision_tower.vision_model.";

/// The mmproj name of a tower tensor named as transformers names it under
/// `vision_tower.vision_model.` (or a projector tensor): e.g.
/// `encoder.layers.3.self_attn.q_proj.weight` → `v.blk.3.attn_q.weight`.
pub fn gguf_name(hf: &str) -> Option<String> {
    if hf == format!("{PROJECTOR_PREFIX}{PROJECTION}") {
        return Some("mm.input_projection.weight".into());
    }
    if hf == format!("{PROJECTOR_PREFIX}{PROJECTION_NORM}") {
        return Some("mm.soft_emb_norm.weight".into());
    }
    let (stem, leaf) = hf.rsplit_once('.')?;
    let mapped = match stem {
        "embeddings.patch_embedding" => "v.patch_embd".to_string(),
        "embeddings.position_embedding" => "v.position_embd".to_string(),
        "post_layernorm" => "v.post_ln".to_string(),
        _ => {
            let rest = stem.strip_prefix("encoder.layers.")?;
            let (l, part) = rest.split_once('.')?;
            let part = match part {
                "layer_norm1" => "ln1",
                "layer_norm2" => "ln2",
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.out_proj" => "attn_out",
                "mlp.fc1" => "ffn_up",
                "mlp.fc2" => "ffn_down",
                _ => return None,
            };
            format!("v.blk.{}.{part}", l.parse::<usize>().ok()?)
        }
    };
    Some(format!("{mapped}.{leaf}"))
}

/// The projector type of an mmproj file (`clip.projector_type`, or
/// `clip.vision.projector_type` as newer converters write it), after
/// checking it is one: `"gemma3"` or `"gemma4v"` among those we read.
pub fn projector_type(f: &GgufFile) -> Result<String> {
    let arch = f.get("general.architecture").and_then(GgufValue::as_str).unwrap_or("");
    if arch != ARCH {
        return Err(GemmaError::Unsupported(format!("an mmproj file has general.architecture \"clip\"; this one has \"{arch}\" (is it the text model?)")));
    }
    Ok(f.get("clip.projector_type").or_else(|| f.get("clip.vision.projector_type")).and_then(GgufValue::as_str).unwrap_or("").to_string())
}

fn key_u64(f: &GgufFile, k: &str) -> Result<usize> {
    f.get(k).and_then(GgufValue::as_u64).map(|v| v as usize).ok_or_else(|| GemmaError::config(k, "missing from the mmproj file"))
}

/// The Gemma 3 vision tower of an mmproj file, feeding a text model of
/// width `text_hidden`, with the image token ids `(image, boi, eoi)` of the
/// text model's tokenizer.
pub fn load(f: &GgufFile, text_hidden: usize, (image_token, boi_token, eoi_token): (u32, u32, u32)) -> Result<(VisionSpec, VisionTower)> {
    let kind = projector_type(f)?;
    if kind != PROJECTOR_GEMMA3 {
        return Err(GemmaError::Unsupported(format!("an mmproj with projector type \"{kind}\" (Gemma 3's \"gemma3\" and Gemma 4's \"gemma4v\" are supported)")));
    }
    for k in ["clip.vision.image_mean", "clip.vision.image_std"] {
        let ok = f.get(k).and_then(GgufValue::as_array).is_some_and(|a| a.iter().all(|v| v.as_f64().is_some_and(|x| (x - 0.5).abs() < 1e-6)));
        if !ok {
            return Err(GemmaError::Unsupported(format!("{k} other than Gemma 3's 0.5")));
        }
    }
    let config = SiglipConfig {
        hidden_size: key_u64(f, "clip.vision.embedding_length")?,
        intermediate_size: key_u64(f, "clip.vision.feed_forward_length")?,
        num_hidden_layers: key_u64(f, "clip.vision.block_count")?,
        num_attention_heads: key_u64(f, "clip.vision.attention.head_count")?,
        num_channels: 3,
        image_size: key_u64(f, "clip.vision.image_size")?,
        patch_size: key_u64(f, "clip.vision.patch_size")?,
        layer_norm_eps: f.get("clip.vision.attention.layer_norm_epsilon").and_then(GgufValue::as_f64).unwrap_or(1e-6),
        hidden_act: "gelu_pytorch_tanh".into(),
    };
    let proj = key_u64(f, "clip.vision.projection_dim")?;
    if proj != text_hidden {
        return Err(GemmaError::invalid("mmproj", format!("the projector feeds a model of width {proj}; the text model's is {text_hidden} (an mmproj of another model?)")));
    }
    let scale = f.get("clip.vision.projector.scale_factor").and_then(GgufValue::as_u64).unwrap_or(4) as usize;
    let side = config.patches_per_side() / scale.max(1);
    let tokens_per_image = side * side;
    let source = |name: &str| -> Result<(Vec<usize>, Storage)> {
        let short = name.strip_prefix(PREFIX).unwrap_or(name);
        let g = gguf_name(short).ok_or_else(|| GemmaError::MissingTensor { name: name.into() })?;
        let t = f.tensor(&g).ok_or_else(|| GemmaError::MissingTensor { name: format!("{g} (mmproj)") })?;
        let storage = Storage::Raw { dtype: t.dtype, len: t.elements() as usize, bytes: f.tensor_bytes(t) };
        if g == "mm.soft_emb_norm.weight" {
            // Stored as 1 + w; the tower applies (1 + w).
            let w: Vec<f32> = gemma_quant::to_f32_vec(&storage).into_iter().map(|x| x - 1.0).collect();
            return Ok((t.shape(), Storage::F32(w)));
        }
        Ok((t.shape(), storage))
    };
    let tower = SiglipTower::load(config.clone(), tokens_per_image, text_hidden, PREFIX, &source)?;
    Ok((VisionSpec { tower: super::TowerConfig::Siglip(config), tokens_per_image, image_token, boi_token, eoi_token }, VisionTower::Siglip(tower)))
}

/// One tensor of an mmproj file to write: its name, ggml dims (innermost
/// first), values, and whether it is a weight matrix (stored in the
/// file's matrix type; the rest in f32, as llama.cpp keeps norms, biases
/// and embeddings).
#[derive(Debug, Clone, PartialEq)]
pub struct MmprojTensor {
    /// llama.cpp's name.
    pub name: String,
    /// ggml dims.
    pub dims: Vec<u64>,
    /// Values, row-major.
    pub values: Vec<f32>,
    /// A weight matrix of an encoder block or the projection.
    pub matrix: bool,
}

/// The metadata llama.cpp's mmproj loader reads, and every tensor under its
/// name, of a Gemma 3 tower.
pub fn export(tower: &SiglipTower) -> (Vec<(String, GgufValue)>, Vec<MmprojTensor>) {
    let c = &tower.config;
    let u = |x: usize| GgufValue::U32(x as u32);
    let half = GgufValue::Array(vec![GgufValue::F32(0.5); 3]);
    let mut kv = vec![
        ("general.architecture".to_string(), GgufValue::String(ARCH.into())),
        ("general.type".to_string(), GgufValue::String("mmproj".into())),
        ("clip.has_vision_encoder".to_string(), GgufValue::Bool(true)),
        ("clip.projector_type".to_string(), GgufValue::String(PROJECTOR_GEMMA3.into())),
        ("clip.vision.image_size".to_string(), u(c.image_size)),
        ("clip.vision.patch_size".to_string(), u(c.patch_size)),
        ("clip.vision.embedding_length".to_string(), u(c.hidden_size)),
        ("clip.vision.feed_forward_length".to_string(), u(c.intermediate_size)),
        ("clip.vision.block_count".to_string(), u(c.num_hidden_layers)),
        ("clip.vision.projection_dim".to_string(), u(tower.text_hidden)),
        ("clip.vision.attention.head_count".to_string(), u(c.num_attention_heads)),
        ("clip.vision.attention.layer_norm_epsilon".to_string(), GgufValue::F32(c.layer_norm_eps as f32)),
        ("clip.vision.image_mean".to_string(), half.clone()),
        ("clip.vision.image_std".to_string(), half),
        ("clip.use_gelu".to_string(), GgufValue::Bool(true)),
    ];
    let side = (tower.tokens_per_image as f64).sqrt() as usize;
    let scale = c.patches_per_side() / side.max(1);
    if scale != 4 {
        kv.push(("clip.vision.projector.scale_factor".to_string(), u(scale)));
    }
    let (h, p, ch) = (c.hidden_size as u64, c.patch_size as u64, c.num_channels as u64);
    let vec1 = |name: &str, v: &[f32]| MmprojTensor { name: name.into(), dims: vec![v.len() as u64], values: v.to_vec(), matrix: false };
    let mat = |name: &str, m: &gemma_core::Matrix| MmprojTensor { name: name.into(), dims: vec![m.cols as u64, m.rows as u64], values: gemma_quant::to_f32_vec(&m.storage), matrix: true };
    let mut ts = Vec::new();
    let mut patch = mat("v.patch_embd.weight", &tower.patch.0);
    (patch.dims, patch.matrix) = (vec![p, p, ch, h], false);
    ts.push(patch);
    ts.push(vec1("v.patch_embd.bias", &tower.patch.1));
    ts.push(MmprojTensor { name: "v.position_embd.weight".into(), dims: vec![h, (tower.positions.len() as u64) / h], values: tower.positions.clone(), matrix: false });
    for (l, b) in tower.blocks.iter().enumerate() {
        for (part, (w, bias)) in [("attn_q", &b.q), ("attn_k", &b.k), ("attn_v", &b.v), ("attn_out", &b.o), ("ffn_up", &b.fc1), ("ffn_down", &b.fc2)] {
            ts.push(mat(&format!("v.blk.{l}.{part}.weight"), w));
            ts.push(vec1(&format!("v.blk.{l}.{part}.bias"), bias));
        }
        for (part, (w, bias)) in [("ln1", &b.ln1), ("ln2", &b.ln2)] {
            ts.push(vec1(&format!("v.blk.{l}.{part}.weight"), w));
            ts.push(vec1(&format!("v.blk.{l}.{part}.bias"), bias));
        }
    }
    ts.push(vec1("v.post_ln.weight", &tower.post.0));
    ts.push(vec1("v.post_ln.bias", &tower.post.1));
    let gain: Vec<f32> = tower.mm_norm.iter().map(|w| 1.0 + w).collect();
    ts.push(vec1("mm.soft_emb_norm.weight", &gain));
    // Held transposed `[text_hidden, hidden]`; the file has `[hidden, text_hidden]`.
    let (th, vh) = (tower.text_hidden, c.hidden_size);
    let t = gemma_quant::to_f32_vec(&tower.mm_proj.storage);
    let mut back = vec![0f32; t.len()];
    for j in 0..th {
        for i in 0..vh {
            back[i * th + j] = t[j * vh + i];
        }
    }
    ts.push(MmprojTensor { name: "mm.input_projection.weight".into(), dims: vec![th as u64, vh as u64], values: back, matrix: true });
    (kv, ts)
}

/// Checks a name map: each `(hf, gguf)` pair maps, each of `refused` does not.
#[cfg(test)]
pub(super) fn check_names(map: fn(&str) -> Option<String>, pairs: &[(&str, &str)], refused: &[&str]) {
    for (hf, g) in pairs {
        assert_eq!(map(hf).as_deref(), Some(*g), "{hf}");
    }
    for hf in refused {
        assert_eq!(map(hf), None, "{hf}");
    }
}

#[cfg(test)]
mod tests {
    use super::{check_names, gguf_name};

    #[test]
    fn names_follow_llama_cpp() {
        let pairs = [
            ("embeddings.patch_embedding.weight", "v.patch_embd.weight"),
            ("embeddings.position_embedding.weight", "v.position_embd.weight"),
            ("encoder.layers.11.self_attn.out_proj.bias", "v.blk.11.attn_out.bias"),
            ("encoder.layers.0.mlp.fc1.weight", "v.blk.0.ffn_up.weight"),
            ("encoder.layers.0.layer_norm2.weight", "v.blk.0.ln2.weight"),
            ("post_layernorm.bias", "v.post_ln.bias"),
            ("multi_modal_projector.mm_input_projection_weight", "mm.input_projection.weight"),
            ("multi_modal_projector.mm_soft_emb_norm.weight", "mm.soft_emb_norm.weight"),
        ];
        check_names(gguf_name, &pairs, &["encoder.layers.x.mlp.fc1.weight", "head.attention.in_proj_weight"]);
    }
}
