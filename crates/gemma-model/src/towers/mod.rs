//! Towers: modules that turn media into rows of the text model's embedding
//! width (soft tokens), which a forward segment carries in place of the
//! placeholder tokens' embeddings. One file per tower.

mod attention;
pub mod gemma4_vision;
pub mod mmproj;
pub mod mmproj_gemma4;
pub mod preprocess;
pub mod siglip;

use gemma_core::{GemmaError, Result, Storage};
use gemma_formats::SafetensorsSet;
use serde_json::Value;
pub use gemma4_vision::{Gemma4Encoding, Gemma4VisionConfig, Gemma4VisionTower, PatchInput};
pub use siglip::{SiglipConfig, SiglipEncoding, SiglipTower};

/// A tower's weight matrix, stored in bf16 when it is f16 whose every value
/// bf16 holds exactly: llama.cpp's converter writes a Gemma tower (trained
/// and published in bf16) as f16, and each f16 value rounded from a bf16
/// one converts back without loss — the same weights, on the bf16 products
/// (AMX-BF16 / AVX512-BF16) instead of the f32 path. Anything else (a
/// genuinely f16 tower, f32, bf16, quantized) stays as it is.
pub(crate) fn lossless_bf16(s: Storage) -> Storage {
    if s.dtype() != gemma_core::DType::F16 {
        return s;
    }
    let vals = gemma_quant::to_f32_vec(&s);
    let b: Vec<half::bf16> = vals.iter().map(|&v| half::bf16::from_f32(v)).collect();
    if b.iter().zip(&vals).all(|(x, &v)| x.to_f32() == v || (v.is_nan() && x.is_nan())) {
        Storage::BF16(b)
    } else {
        s
    }
}

/// A tower's config, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum TowerConfig {
    /// Gemma 3's SigLIP encoder.
    Siglip(SiglipConfig),
    /// Gemma 4's vision encoder.
    Gemma4(Gemma4VisionConfig),
}

/// What a multimodal config says about images: the tower's config, the soft
/// tokens per image and the token ids around them.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionSpec {
    /// The encoder's config.
    pub tower: TowerConfig,
    /// Soft tokens per image: Gemma 3's fixed count (256); for Gemma 4 the
    /// budget an image is resized to (70, 140, 280, 560 or 1120; 280 by
    /// default), an image's own count depending on its shape.
    pub tokens_per_image: usize,
    /// The placeholder id of a soft token (`<image_soft_token>`).
    pub image_token: u32,
    /// `<start_of_image>`.
    pub boi_token: u32,
    /// `<end_of_image>`.
    pub eoi_token: u32,
}

/// The soft-token budgets Gemma 4's image processor accepts.
pub const GEMMA4_SOFT_TOKENS: [usize; 5] = [70, 140, 280, 560, 1120];

impl VisionSpec {
    /// The image part of a `Gemma3ForConditionalGeneration` or
    /// `Gemma4ForConditionalGeneration` config.json (transformers' defaults
    /// where a field is absent); None for other architectures or without a
    /// `vision_config`.
    pub fn from_config(top: &Value) -> Result<Option<Self>> {
        let arch = top.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).or_else(|| top.get("model_type").and_then(Value::as_str));
        let gemma4 = match arch {
            Some("Gemma3ForConditionalGeneration" | "gemma3") => false,
            Some("Gemma4ForConditionalGeneration" | "gemma4") => true,
            _ => return Ok(None),
        };
        let Some(v) = top.get("vision_config").filter(|v| !v.is_null()) else { return Ok(None) };
        let id = |keys: &[&str], default: u64| -> Result<u32> {
            match keys.iter().find_map(|k| top.get(*k).map(|x| (*k, x))) {
                None => Ok(default as u32),
                Some((k, x)) => x.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| GemmaError::config(k, format!("{x} is not a token id"))),
            }
        };
        // transformers takes a `null` field as its default; so does serde when it is absent.
        let v = &match v {
            Value::Object(m) => Value::Object(m.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), x.clone())).collect()),
            other => other.clone(),
        };
        if gemma4 {
            let tower: Gemma4VisionConfig = serde_json::from_value(v.clone()).map_err(|e| GemmaError::config("vision_config", e.to_string()))?;
            tower.validate()?;
            // The processor's default budget; `--image-tokens` (the CLI) or the
            // processor config may pick another.
            let tokens_per_image = match top.get("vision_soft_tokens_per_image") {
                None => 280,
                Some(x) => x.as_u64().filter(|n| GEMMA4_SOFT_TOKENS.contains(&(*n as usize))).ok_or_else(|| GemmaError::config("vision_soft_tokens_per_image", format!("{x} is not one of {GEMMA4_SOFT_TOKENS:?}")))? as usize,
            };
            return Ok(Some(Self {
                tower: TowerConfig::Gemma4(tower),
                tokens_per_image,
                image_token: id(&["image_token_id", "image_token_index"], 258_880)?,
                boi_token: id(&["boi_token_id", "boi_token_index"], 255_999)?,
                eoi_token: id(&["eoi_token_id", "eoi_token_index"], 258_882)?,
            }));
        }
        let tower: SiglipConfig = serde_json::from_value(v.clone()).map_err(|e| GemmaError::config("vision_config", e.to_string()))?;
        let tokens_per_image = match top.get("mm_tokens_per_image") {
            None => 256,
            Some(x) => x.as_u64().ok_or_else(|| GemmaError::config("mm_tokens_per_image", format!("{x} is not a count")))? as usize,
        };
        // Checked when the tower loads: a text-only re-save keeps the config
        // of a tower it does not hold.
        Ok(Some(Self {
            tower: TowerConfig::Siglip(tower),
            tokens_per_image,
            image_token: id(&["image_token_index"], 262_144)?,
            boi_token: id(&["boi_token_index"], 255_999)?,
            eoi_token: id(&["eoi_token_index"], 256_000)?,
        }))
    }

    /// The token a rendered prompt holds where an image goes: Gemma 3's
    /// chat template writes `<start_of_image>`, Gemma 4's the soft-token
    /// placeholder `<|image|>`.
    pub fn mark_token(&self) -> u32 {
        if self.variable_tokens() {
            self.image_token
        } else {
            self.boi_token
        }
    }

    /// Whether an image's soft-token count depends on its shape (Gemma 4).
    pub fn variable_tokens(&self) -> bool {
        matches!(self.tower, TowerConfig::Gemma4(_))
    }

    /// What the tower takes of `img` (Gemma 3: `[3, S, S]` pixels; Gemma 4:
    /// its patches at this spec's soft-token budget).
    pub fn preprocess(&self, img: &gemma_formats::image_file::Rgb8) -> Result<TowerInput> {
        match &self.tower {
            TowerConfig::Siglip(c) => Ok(TowerInput::Square(preprocess::gemma3_pixels(img, c.image_size))),
            TowerConfig::Gemma4(c) => preprocess::gemma4_patches(img, c.patch_size, self.tokens_per_image, c.pooling_kernel_size).map(TowerInput::Patches).map_err(|e| GemmaError::invalid("image", e)),
        }
    }

    /// One line on the tower for `gemma inspect` and the CLI.
    pub fn describe(&self) -> String {
        match &self.tower {
            TowerConfig::Siglip(t) => format!("SigLIP, {} layers, width {}, {}×{} images in {}-pixel patches → {} soft tokens", t.num_hidden_layers, t.hidden_size, t.image_size, t.image_size, t.patch_size, self.tokens_per_image),
            TowerConfig::Gemma4(t) => format!(
                "Gemma 4 vision, {} layers, width {}, {}-pixel patches pooled {}×{}, aspect kept → up to {} soft tokens an image",
                t.num_hidden_layers, t.hidden_size, t.patch_size, t.pooling_kernel_size, t.pooling_kernel_size, self.tokens_per_image
            ),
        }
    }
}

/// A preprocessed image, as its tower takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum TowerInput {
    /// Gemma 3: `[3, S, S]` pixels.
    Square(Vec<f32>),
    /// Gemma 4: real patches and their positions.
    Patches(PatchInput),
}

/// An image part-way through a tower's encoder.
#[derive(Debug, Clone)]
pub enum TowerEncoding {
    /// SigLIP's residual stream and next block.
    Siglip(SiglipEncoding),
    /// Gemma 4's residual stream, patch positions and next block.
    Gemma4(Gemma4Encoding),
}

/// A loaded vision tower.
#[derive(Debug)]
pub enum VisionTower {
    /// Gemma 3's SigLIP encoder and projector.
    Siglip(SiglipTower),
    /// Gemma 4's vision encoder and embedder.
    Gemma4(Gemma4VisionTower),
}

impl VisionTower {
    /// The tower of `spec` from a checkpoint's safetensors, or None when the
    /// checkpoint holds no tower weights (a text-only re-save).
    pub fn from_safetensors(set: &SafetensorsSet, spec: &VisionSpec, text_hidden: usize) -> Result<Option<Self>> {
        let source = |name: &str| set.load(name);
        match &spec.tower {
            TowerConfig::Siglip(c) => {
                let probe = "embeddings.patch_embedding.weight";
                let Some(prefix) = siglip::TOWER_PREFIXES.iter().find(|p| set.info(&format!("{p}{probe}")).is_some()) else { return Ok(None) };
                Ok(Some(Self::Siglip(SiglipTower::load(c.clone(), spec.tokens_per_image, text_hidden, prefix, &source)?)))
            }
            TowerConfig::Gemma4(c) => {
                let Some(prefix) = gemma4_vision::TOWER_PREFIXES.iter().find(|p| set.info(&format!("{p}{}", gemma4_vision::PROBE)).is_some()) else { return Ok(None) };
                let embedder = gemma4_vision::EMBEDDER_PREFIXES.iter().find(|p| set.info(&format!("{p}embedding_projection.weight")).is_some()).unwrap_or(&gemma4_vision::EMBEDDER_PREFIXES[0]);
                Ok(Some(Self::Gemma4(Gemma4VisionTower::load(c.clone(), text_hidden, prefix, embedder, &source)?)))
            }
        }
    }

    /// Soft tokens `[tokens, text_hidden]` of one preprocessed image.
    pub fn encode(&self, input: &TowerInput) -> Result<Vec<f32>> {
        let mut e = self.begin(input)?;
        loop {
            if let Some(rows) = self.step(&mut e) {
                return Ok(rows);
            }
        }
    }

    /// Start encoding one preprocessed image; [`VisionTower::step`] runs it.
    pub fn begin(&self, input: &TowerInput) -> Result<TowerEncoding> {
        match (self, input) {
            (Self::Siglip(t), TowerInput::Square(p)) => t.begin(p).map(TowerEncoding::Siglip),
            (Self::Gemma4(t), TowerInput::Patches(p)) => t.begin(p).map(TowerEncoding::Gemma4),
            _ => Err(GemmaError::invalid("image", "the image was preprocessed for another tower")),
        }
    }

    /// Run one encoder layer of `e`; after the last, the soft tokens
    /// `[tokens, text_hidden]` (the encode is then over).
    pub fn step(&self, e: &mut TowerEncoding) -> Option<Vec<f32>> {
        match (self, e) {
            (Self::Siglip(t), TowerEncoding::Siglip(e)) => t.advance(e).then(|| t.finish(std::mem::take(e))),
            (Self::Gemma4(t), TowerEncoding::Gemma4(e)) => t.advance(e).then(|| t.finish(std::mem::take(e))),
            // A mismatched encoding (never made by `begin`): nothing to give.
            _ => Some(Vec::new()),
        }
    }

    /// Steps an encode takes (encoder layers).
    pub fn steps(&self) -> usize {
        match self {
            Self::Siglip(t) => t.layers(),
            Self::Gemma4(t) => t.layers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// f16 weights that came from bf16 ones (llama.cpp's converter on a
    /// Gemma tower) go back to bf16, values unchanged — small ones that f16
    /// keeps as subnormals included; other f16 weights stay f16.
    #[test]
    fn f16_from_bf16_goes_back_losslessly() {
        let vals: Vec<f32> = (0..4096).map(|i| ((i * 7919 % 1999) as f32 / 999.5 - 1.0) * if i % 7 == 0 { 1e-6 } else { 0.05 }).collect();
        let from_bf16: Vec<f16> = vals.iter().map(|&v| f16::from_f32(bf16::from_f32(v).to_f32())).collect();
        let s = lossless_bf16(Storage::F16(from_bf16.clone()));
        assert_eq!(s.dtype(), gemma_core::DType::BF16);
        assert_eq!(gemma_quant::to_f32_vec(&s), from_bf16.iter().map(|x| x.to_f32()).collect::<Vec<_>>());
        let plain: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
        assert_eq!(lossless_bf16(Storage::F16(plain)).dtype(), gemma_core::DType::F16);
        assert_eq!(lossless_bf16(Storage::F32(vals)).dtype(), gemma_core::DType::F32);
    }
}
