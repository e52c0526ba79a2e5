//! llama.cpp's split form of a multimodal Gemma 4: the vision tower and
//! embedder in an `mmproj` GGUF (`general.architecture = "clip"`,
//! projector type `"gemma4v"`), read into the same [`Gemma4VisionTower`]
//! as a Hugging Face checkpoint, and listed back out under llama.cpp's
//! names for `gemma quantize` to write.
//!
//! Format quirks (as llama.cpp's converter writes them): tensors under
//! `v.*` and `mm.*`; the patch embedding is the 4-D convolution
//! `{p, p, 3, hidden}` (channel-major: `[hidden, 3, p, p]` row-major) where
//! transformers' linear reads a patch as (y, x, channel); the clipped
//! linears' bounds are one-element tensors beside their weight
//! (`v.blk.0.attn_q.input_min`); the pooling window is
//! `clip.vision.projector.scale_factor` (3 when absent), the RoPE base is
//! llama.cpp's fixed 100, the key/value heads equal the query heads unless
//! `clip.vision.attention.head_count_kv` says otherwise. llama.cpp's own
//! converter writes no `clip.use_gelu`, and llama.cpp then runs the MLP
//! with quick-GELU; the model is trained with tanh-GELU, which is what we
//! compute (and the files we write set `clip.use_gelu`).

use super::gemma4_vision::{Gemma4VisionConfig, Gemma4VisionTower, Linear, VisionRope, EMBEDDER_PREFIXES, TOWER_PREFIXES};
use super::mmproj::{MmprojTensor, ARCH};
use super::{TowerConfig, VisionSpec, VisionTower};
use gemma_core::{GemmaError, Result, Storage};
use gemma_formats::{GgufFile, GgufValue};

/// The projector type of Gemma 4's vision tower.
pub const PROJECTOR_GEMMA4: &str = "gemma4v";

/// llama.cpp's name of each per-layer part, by transformers' name.
const LAYER_PARTS: [(&str, &str); 13] = [
    ("input_layernorm.weight", "ln1.weight"),
    ("post_attention_layernorm.weight", "attn_post_norm.weight"),
    ("pre_feedforward_layernorm.weight", "ln2.weight"),
    ("post_feedforward_layernorm.weight", "ffn_post_norm.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_out"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// The mmproj name of a tower tensor named as transformers saves it under
/// `model.vision_tower.` (or the embedder's projection under
/// `model.embed_vision.`), e.g. `encoder.layers.3.self_attn.q_proj.linear.weight`
/// → `v.blk.3.attn_q.weight`, `…q_proj.input_min` → `v.blk.3.attn_q.input_min`.
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some(rest) = EMBEDDER_PREFIXES.iter().find_map(|p| hf.strip_prefix(p)) {
        return (rest == "embedding_projection.weight").then(|| "mm.input_projection.weight".into());
    }
    let rest = TOWER_PREFIXES.iter().find_map(|p| hf.strip_prefix(p))?;
    match rest {
        "patch_embedder.input_proj.weight" => return Some("v.patch_embd.weight".into()),
        "patch_embedder.position_embedding_table" => return Some("v.position_embd.weight".into()),
        "std_bias" => return Some("v.std_bias".into()),
        "std_scale" => return Some("v.std_scale".into()),
        _ => {}
    }
    let (l, part) = rest.strip_prefix("encoder.layers.")?.split_once('.')?;
    let l: usize = l.parse().ok()?;
    LAYER_PARTS.iter().find_map(|&(hf_part, g)| {
        let tail = part.strip_prefix(hf_part)?;
        match tail {
            "" => Some(format!("v.blk.{l}.{g}")),
            ".linear.weight" => Some(format!("v.blk.{l}.{g}.weight")),
            ".input_min" | ".input_max" | ".output_min" | ".output_max" => Some(format!("v.blk.{l}.{g}{tail}")),
            _ => None,
        }
    })
}

fn key_u64(f: &GgufFile, k: &str) -> Result<usize> {
    f.get(k).and_then(GgufValue::as_u64).map(|v| v as usize).ok_or_else(|| GemmaError::config(k, "missing from the mmproj file"))
}

/// The Gemma 4 vision tower of an mmproj file, feeding a text model of
/// width `text_hidden`, with the image token ids `(image, boi, eoi)` of the
/// text model's tokenizer; `tokens_per_image` is the soft-token budget
/// (transformers' default 280; the file does not say).
pub fn load(f: &GgufFile, text_hidden: usize, (image_token, boi_token, eoi_token): (u32, u32, u32), tokens_per_image: usize) -> Result<(VisionSpec, VisionTower)> {
    for (k, want) in [("clip.vision.image_mean", 0.0), ("clip.vision.image_std", 1.0)] {
        let ok = f.get(k).and_then(GgufValue::as_array).is_none_or(|a| a.iter().all(|v| v.as_f64().is_some_and(|x| (x - want).abs() < 1e-6)));
        if !ok {
            return Err(GemmaError::Unsupported(format!("{k} other than Gemma 4's {want}")));
        }
    }
    let hidden = key_u64(f, "clip.vision.embedding_length")?;
    let heads = key_u64(f, "clip.vision.attention.head_count")?;
    let positions = f.tensor("v.position_embd.weight").ok_or_else(|| GemmaError::MissingTensor { name: "v.position_embd.weight (mmproj)".into() })?;
    let config = Gemma4VisionConfig {
        hidden_size: hidden,
        intermediate_size: key_u64(f, "clip.vision.feed_forward_length")?,
        num_hidden_layers: key_u64(f, "clip.vision.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: key_u64(f, "clip.vision.attention.head_count_kv").unwrap_or(heads),
        head_dim: key_u64(f, "clip.vision.attention.head_dim").unwrap_or(hidden / heads.max(1)),
        hidden_activation: "gelu_pytorch_tanh".into(),
        rms_norm_eps: f.get("clip.vision.attention.layer_norm_epsilon").and_then(GgufValue::as_f64).unwrap_or(1e-6),
        pooling_kernel_size: f.get("clip.vision.projector.scale_factor").and_then(GgufValue::as_u64).unwrap_or(3) as usize,
        patch_size: key_u64(f, "clip.vision.patch_size")?,
        position_embedding_size: positions.shape().get(1).copied().unwrap_or(0),
        rope_parameters: VisionRope::default(),
        use_clipped_linears: f.tensor("v.blk.0.attn_q.input_min").is_some(),
        standardize: f.tensor("v.std_bias").is_some(),
    };
    let proj = key_u64(f, "clip.vision.projection_dim")?;
    if proj != text_hidden {
        return Err(GemmaError::invalid("mmproj", format!("the projector feeds a model of width {proj}; the text model's is {text_hidden} (an mmproj of another model?)")));
    }
    let p = config.patch_size;
    let source = |name: &str| -> Result<(Vec<usize>, Storage)> {
        let g = gguf_name(name).ok_or_else(|| GemmaError::MissingTensor { name: name.into() })?;
        let t = f.tensor(&g).ok_or_else(|| GemmaError::MissingTensor { name: format!("{g} (mmproj)") })?;
        let storage = Storage::Raw { dtype: t.dtype, len: t.elements() as usize, bytes: f.tensor_bytes(t) };
        let shape = t.shape();
        if g == "v.patch_embd.weight" {
            // [hidden, 3, p, p] → transformers' [hidden, (y, x, channel)].
            let conv = gemma_quant::to_f32_vec(&storage);
            if shape != [hidden, 3, p, p] {
                return Err(GemmaError::ShapeMismatch { name: g, expected: vec![hidden, 3, p, p], found: shape });
            }
            let mut w = vec![0f32; conv.len()];
            for (src, dst) in conv.chunks_exact(3 * p * p).zip(w.chunks_exact_mut(3 * p * p)) {
                for c in 0..3 {
                    for y in 0..p {
                        for x in 0..p {
                            dst[(y * p + x) * 3 + c] = src[(c * p + y) * p + x];
                        }
                    }
                }
            }
            return Ok((vec![hidden, 3 * p * p], Storage::F32(w)));
        }
        // The clip bounds are one-element tensors; transformers' are scalars.
        let bound = g.ends_with("_min") || g.ends_with("_max");
        let shape = if bound && shape == [1] { Vec::new() } else { shape };
        Ok((shape, storage))
    };
    let tower = Gemma4VisionTower::load(config.clone(), text_hidden, TOWER_PREFIXES[0], EMBEDDER_PREFIXES[0], &source)?;
    Ok((VisionSpec { tower: TowerConfig::Gemma4(config), tokens_per_image, image_token, boi_token, eoi_token }, VisionTower::Gemma4(tower)))
}

/// The metadata llama.cpp's mmproj loader reads, and every tensor under its
/// name, of a Gemma 4 tower.
pub fn export(tower: &Gemma4VisionTower) -> (Vec<(String, GgufValue)>, Vec<MmprojTensor>) {
    let c = &tower.config;
    let u = |x: usize| GgufValue::U32(x as u32);
    let s = |k: &str, v: GgufValue| (k.to_string(), v);
    let mut kv = vec![
        s("general.architecture", GgufValue::String(ARCH.into())),
        s("general.type", GgufValue::String("mmproj".into())),
        s("clip.has_vision_encoder", GgufValue::Bool(true)),
        s("clip.projector_type", GgufValue::String(PROJECTOR_GEMMA4.into())),
        s("clip.vision.projector_type", GgufValue::String(PROJECTOR_GEMMA4.into())),
        // llama.cpp requires the key; Gemma 4 images have no fixed size.
        s("clip.vision.image_size", u(224)),
        s("clip.vision.patch_size", u(c.patch_size)),
        s("clip.vision.embedding_length", u(c.hidden_size)),
        s("clip.vision.feed_forward_length", u(c.intermediate_size)),
        s("clip.vision.block_count", u(c.num_hidden_layers)),
        s("clip.vision.projection_dim", u(tower.text_hidden)),
        s("clip.vision.attention.head_count", u(c.num_attention_heads)),
        s("clip.vision.attention.layer_norm_epsilon", GgufValue::F32(c.rms_norm_eps as f32)),
        s("clip.vision.image_mean", GgufValue::Array(vec![GgufValue::F32(0.0); 3])),
        s("clip.vision.image_std", GgufValue::Array(vec![GgufValue::F32(1.0); 3])),
        s("clip.use_gelu", GgufValue::Bool(true)),
    ];
    if c.num_key_value_heads != c.num_attention_heads {
        kv.push(s("clip.vision.attention.head_count_kv", u(c.num_key_value_heads)));
    }
    if c.head_dim * c.num_attention_heads != c.hidden_size {
        kv.push(s("clip.vision.attention.head_dim", u(c.head_dim)));
    }
    if c.pooling_kernel_size != 3 {
        kv.push(s("clip.vision.projector.scale_factor", u(c.pooling_kernel_size)));
    }
    let (h, p) = (c.hidden_size, c.patch_size);
    let vec1 = |name: String, v: &[f32]| MmprojTensor { name, dims: vec![v.len() as u64], values: v.to_vec(), matrix: false };
    let mat = |name: String, m: &gemma_core::Matrix| MmprojTensor { name, dims: vec![m.cols as u64, m.rows as u64], values: gemma_quant::to_f32_vec(&m.storage), matrix: true };
    let mut ts = Vec::new();
    // transformers' [hidden, (y, x, channel)] → the convolution [hidden, 3, p, p].
    let lin = gemma_quant::to_f32_vec(&tower.patch.storage);
    let mut conv = vec![0f32; lin.len()];
    for (src, dst) in lin.chunks_exact(3 * p * p).zip(conv.chunks_exact_mut(3 * p * p)) {
        for c in 0..3 {
            for y in 0..p {
                for x in 0..p {
                    dst[(c * p + y) * p + x] = src[(y * p + x) * 3 + c];
                }
            }
        }
    }
    ts.push(MmprojTensor { name: "v.patch_embd.weight".into(), dims: vec![p as u64, p as u64, 3, h as u64], values: conv, matrix: false });
    ts.push(MmprojTensor { name: "v.position_embd.weight".into(), dims: vec![h as u64, c.position_embedding_size as u64, 2], values: tower.positions.clone(), matrix: false });
    for (l, b) in tower.blocks.iter().enumerate() {
        let norms = [("ln1", &b.input_norm), ("attn_post_norm", &b.post_attention_norm), ("ln2", &b.pre_ffn_norm), ("ffn_post_norm", &b.post_ffn_norm), ("attn_q_norm", &b.q_norm), ("attn_k_norm", &b.k_norm)];
        for (part, w) in norms {
            ts.push(vec1(format!("v.blk.{l}.{part}.weight"), w));
        }
        let linears: [(&str, &Linear); 7] = [("attn_q", &b.q), ("attn_k", &b.k), ("attn_v", &b.v), ("attn_out", &b.o), ("ffn_gate", &b.gate), ("ffn_up", &b.up), ("ffn_down", &b.down)];
        for (part, lin) in linears {
            ts.push(mat(format!("v.blk.{l}.{part}.weight"), &lin.w));
            if let Some(bounds) = lin.clip {
                for (bound, v) in ["input_min", "input_max", "output_min", "output_max"].iter().zip(bounds) {
                    ts.push(vec1(format!("v.blk.{l}.{part}.{bound}"), &[v]));
                }
            }
        }
    }
    if let Some((bias, scale)) = &tower.standardize {
        ts.push(vec1("v.std_bias".into(), bias));
        ts.push(vec1("v.std_scale".into(), scale));
    }
    ts.push(mat("mm.input_projection.weight".into(), &tower.projection));
    (kv, ts)
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn names_follow_llama_cpp() {
        let pairs = [
            ("model.vision_tower.patch_embedder.input_proj.weight", "v.patch_embd.weight"),
            ("model.vision_tower.patch_embedder.position_embedding_table", "v.position_embd.weight"),
            ("model.vision_tower.encoder.layers.11.self_attn.o_proj.linear.weight", "v.blk.11.attn_out.weight"),
            ("model.vision_tower.encoder.layers.0.mlp.gate_proj.input_min", "v.blk.0.ffn_gate.input_min"),
            ("model.vision_tower.encoder.layers.2.post_feedforward_layernorm.weight", "v.blk.2.ffn_post_norm.weight"),
            ("model.vision_tower.encoder.layers.2.self_attn.k_norm.weight", "v.blk.2.attn_k_norm.weight"),
            ("model.vision_tower.std_scale", "v.std_scale"),
            ("model.embed_vision.embedding_projection.weight", "mm.input_projection.weight"),
        ];
        super::super::mmproj::check_names(gguf_name, &pairs, &["model.vision_tower.encoder.layers.x.mlp.up_proj.linear.weight", "model.audio_tower.layers.0.weight"]);
    }
}
