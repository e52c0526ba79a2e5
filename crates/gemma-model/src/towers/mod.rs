//! Towers: modules that turn media into rows of the text model's embedding
//! width (soft tokens), which a forward segment carries in place of the
//! placeholder tokens' embeddings. One file per tower.

pub mod preprocess;
pub mod mmproj;
pub mod siglip;

use gemma_core::{GemmaError, Result};
use gemma_formats::SafetensorsSet;
use serde_json::Value;
pub use siglip::{SiglipConfig, SiglipEncoding, SiglipTower};

/// What a multimodal config says about images: the tower's config, the soft
/// tokens per image and the token ids around them.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionSpec {
    /// The SigLIP encoder's config.
    pub tower: SiglipConfig,
    /// Soft tokens per image (Gemma 3: 256).
    pub tokens_per_image: usize,
    /// The placeholder id of a soft token (`<image_soft_token>`).
    pub image_token: u32,
    /// `<start_of_image>`.
    pub boi_token: u32,
    /// `<end_of_image>`.
    pub eoi_token: u32,
}

impl VisionSpec {
    /// The image part of a `Gemma3ForConditionalGeneration` config.json
    /// (transformers' defaults where a field is absent); None for other
    /// architectures or without a `vision_config`.
    pub fn from_config(top: &Value) -> Result<Option<Self>> {
        let arch = top.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).or_else(|| top.get("model_type").and_then(Value::as_str));
        if !matches!(arch, Some("Gemma3ForConditionalGeneration" | "gemma3")) {
            return Ok(None);
        }
        let Some(v) = top.get("vision_config") else { return Ok(None) };
        let tower: SiglipConfig = serde_json::from_value(v.clone()).map_err(|e| GemmaError::config("vision_config", e.to_string()))?;
        let id = |k: &str, default: u64| -> Result<u32> {
            match top.get(k) {
                None => Ok(default as u32),
                Some(x) => x.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| GemmaError::config(k, format!("{x} is not a token id"))),
            }
        };
        let tokens_per_image = match top.get("mm_tokens_per_image") {
            None => 256,
            Some(x) => x.as_u64().ok_or_else(|| GemmaError::config("mm_tokens_per_image", format!("{x} is not a count")))? as usize,
        };
        // Checked when the tower loads: a text-only re-save keeps the config
        // of a tower it does not hold.
        Ok(Some(Self { tower, tokens_per_image, image_token: id("image_token_index", 262_144)?, boi_token: id("boi_token_index", 255_999)?, eoi_token: id("eoi_token_index", 256_000)? }))
    }
}

/// An image part-way through a tower's encoder.
#[derive(Debug, Clone)]
pub enum TowerEncoding {
    /// SigLIP's residual stream and next block.
    Siglip(SiglipEncoding),
}

/// A loaded vision tower.
#[derive(Debug)]
pub enum VisionTower {
    /// Gemma 3's SigLIP encoder and projector.
    Siglip(SiglipTower),
}

impl VisionTower {
    /// The tower of `spec` from a checkpoint's safetensors, or None when the
    /// checkpoint holds no tower weights (a text-only re-save).
    pub fn from_safetensors(set: &SafetensorsSet, spec: &VisionSpec, text_hidden: usize) -> Result<Option<Self>> {
        let probe = "embeddings.patch_embedding.weight";
        let Some(prefix) = siglip::TOWER_PREFIXES.iter().find(|p| set.info(&format!("{p}{probe}")).is_some()) else { return Ok(None) };
        let source = |name: &str| set.load(name);
        Ok(Some(Self::Siglip(SiglipTower::load(spec.tower.clone(), spec.tokens_per_image, text_hidden, prefix, &source)?)))
    }

    /// Soft tokens `[tokens, text_hidden]` of one preprocessed image.
    pub fn encode(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        match self {
            Self::Siglip(t) => t.encode(pixels),
        }
    }

    /// Start encoding one preprocessed image; [`VisionTower::step`] runs it.
    pub fn begin(&self, pixels: &[f32]) -> Result<TowerEncoding> {
        match self {
            Self::Siglip(t) => t.begin(pixels).map(TowerEncoding::Siglip),
        }
    }

    /// Run one encoder layer of `e`; after the last, the soft tokens
    /// `[tokens, text_hidden]` (the encode is then over).
    pub fn step(&self, e: &mut TowerEncoding) -> Option<Vec<f32>> {
        match (self, e) {
            (Self::Siglip(t), TowerEncoding::Siglip(e)) => t.advance(e).then(|| t.finish(std::mem::take(e))),
        }
    }

    /// Steps an encode takes (encoder layers).
    pub fn steps(&self) -> usize {
        match self {
            Self::Siglip(t) => t.layers(),
        }
    }

    /// Soft tokens per image.
    pub fn tokens_per_image(&self) -> usize {
        match self {
            Self::Siglip(t) => t.tokens_per_image,
        }
    }
}
