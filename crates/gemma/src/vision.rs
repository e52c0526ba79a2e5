//! Images in prompts: the vision tower loaded beside the text model, image
//! files encoded to soft tokens (cached by content hash, so a multi-turn
//! chat does not encode an image again), and chat prompts expanded as
//! transformers' `Gemma3Processor` expands them.

use crate::Gemma;
use gemma_core::{GemmaError, Result};
use gemma_generate::MediaInput;
use gemma_model::towers::{preprocess, VisionSpec, VisionTower};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Encoded images kept per model (a chat re-sends its images every turn).
const CACHED_IMAGES: usize = 32;

/// A model's vision tower and what its config says about images.
#[derive(Debug)]
pub struct Vision {
    /// Soft-token count and token ids.
    pub spec: VisionSpec,
    /// The encoder and projector.
    pub tower: VisionTower,
    /// Soft tokens by content hash.
    cache: Mutex<HashMap<[u8; 32], Arc<[f32]>>>,
}

/// One image ready for a prompt: its soft tokens and content hash.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// `[tokens, hidden]`.
    pub rows: Arc<[f32]>,
    /// SHA-256 of the file's bytes.
    pub key: [u8; 32],
}

impl Vision {
    /// The tower of a Hugging Face folder, if its config has one and the
    /// checkpoint holds its weights.
    pub fn load(folder: &Path, text_hidden: usize) -> Result<Option<Self>> {
        let path = folder.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| GemmaError::io(&path, e))?;
        let top: serde_json::Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(&path, e.to_string()))?;
        let Some(spec) = VisionSpec::from_config(&top)? else { return Ok(None) };
        let set = gemma_formats::SafetensorsSet::open_folder(folder)?;
        Ok(VisionTower::from_safetensors(&set, &spec, text_hidden)?.map(|tower| Self { spec, tower, cache: Mutex::new(HashMap::new()) }))
    }
}

impl Gemma {
    /// Whether the model takes images.
    pub fn takes_images(&self) -> bool {
        self.vision.is_some()
    }

    /// Decode, preprocess and encode one image file's bytes (`what` names it
    /// in errors); an image seen before comes from the cache.
    pub fn encode_image(&self, bytes: &[u8], what: &str) -> Result<EncodedImage> {
        let Some(v) = &self.vision else {
            return Err(GemmaError::invalid("image", format!("{what}: this model takes text only (its checkpoint has no vision tower)")));
        };
        let key: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(rows) = v.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(EncodedImage { rows, key });
        }
        let img = gemma_formats::image_file::decode_rgb8(bytes, what)?;
        let pixels = preprocess::gemma3_pixels(&img, v.spec.tower.image_size);
        let rows: Arc<[f32]> = v.tower.encode(&pixels)?.into();
        if let Ok(mut c) = v.cache.lock() {
            if c.len() >= CACHED_IMAGES {
                c.clear();
            }
            c.insert(key, rows.clone());
        }
        Ok(EncodedImage { rows, key })
    }

    /// [`Gemma::encode_image`] of a file.
    pub fn encode_image_file(&self, path: &Path) -> Result<EncodedImage> {
        let bytes = std::fs::read(path).map_err(|e| GemmaError::io(path, e))?;
        self.encode_image(&bytes, &path.display().to_string())
    }

    /// A chat whose messages hold `{"type": "image"}` content parts, with
    /// `images` in the order of those parts: rendered with the chat
    /// template, each `<start_of_image>` expanded to the processor's
    /// `\n\n<start_of_image>` + soft tokens + `<end_of_image>\n\n` (so the
    /// newlines merge with their neighbours as transformers tokenizes them),
    /// encoded; returns the ids and the images placed on their soft-token runs.
    pub fn encode_chat_images(&self, messages: &serde_json::Value, images: &[EncodedImage], kwargs: &serde_json::Map<String, serde_json::Value>) -> Result<(Vec<u32>, Vec<MediaInput>)> {
        if images.is_empty() {
            return Ok((self.encode_chat_kwargs(messages, None, kwargs)?, Vec::new()));
        }
        let Some(v) = &self.vision else { return Err(GemmaError::invalid("image", "this model takes text only (its checkpoint has no vision tower)")) };
        let name = |id: u32| self.tokenizer.id_to_token(id).ok_or_else(|| GemmaError::invalid("image", format!("the tokenizer has no token {id} for images")));
        let (boi, img, eoi) = (name(v.spec.boi_token)?, name(v.spec.image_token)?, name(v.spec.eoi_token)?);
        let text = self.tokenizer.apply_chat_template_kwargs(messages, None, true, kwargs)?;
        let run = format!("\n\n{boi}{}{eoi}\n\n", img.repeat(v.spec.tokens_per_image));
        let ids = self.tokenizer.encode(&text.replace(&boi, &run), self.tokenizer.add_bos)?;
        let starts: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == v.spec.image_token && (i == 0 || ids[i - 1] != v.spec.image_token)).collect();
        if starts.len() != images.len() {
            return Err(GemmaError::invalid("image", format!("the prompt has {} image places for {} images (one `{{\"type\": \"image\"}}` content part per image)", starts.len(), images.len())));
        }
        let media = starts.iter().zip(images).map(|(&at, im)| MediaInput { at, rows: im.rows.clone(), key: im.key }).collect();
        Ok((ids, media))
    }
}
