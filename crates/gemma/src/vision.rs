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
    cache: Mutex<HashMap<[u8; 32], Runs>>,
}

/// An image's soft-token runs `[tokens, hidden]`: the whole image, then its crops.
type Runs = Vec<Arc<[f32]>>;

/// One image ready for a prompt: the soft tokens of the image and, with
/// pan-and-scan, of each crop after it; and the content hash.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// `[tokens, hidden]` each: the whole image, then its crops.
    pub runs: Runs,
    /// SHA-256 of the file's bytes and the pan-and-scan setting.
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
    /// in errors); with `pan_and_scan`, also the crops Gemma 3's
    /// pan-and-scan cuts from an elongated image. An image seen before comes
    /// from the cache.
    pub fn encode_image(&self, bytes: &[u8], what: &str, pan_and_scan: bool) -> Result<EncodedImage> {
        let Some(v) = &self.vision else {
            return Err(GemmaError::invalid("image", format!("{what}: this model takes text only (its checkpoint has no vision tower)")));
        };
        let key: [u8; 32] = Sha256::new().chain_update(bytes).chain_update([pan_and_scan as u8]).finalize().into();
        if let Some(runs) = v.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(EncodedImage { runs, key });
        }
        let img = gemma_formats::image_file::decode_rgb8(bytes, what)?;
        let mut views = vec![img.clone()];
        if pan_and_scan {
            views.extend(preprocess::pan_and_scan(&img, &preprocess::PanAndScan::default()));
        }
        let size = v.spec.tower.image_size;
        let runs = views.iter().map(|im| v.tower.encode(&preprocess::gemma3_pixels(im, size)).map(Arc::from)).collect::<Result<Runs>>()?;
        if let Ok(mut c) = v.cache.lock() {
            if c.len() >= CACHED_IMAGES {
                c.clear();
            }
            c.insert(key, runs.clone());
        }
        Ok(EncodedImage { runs, key })
    }

    /// [`Gemma::encode_image`] of a file.
    pub fn encode_image_file(&self, path: &Path, pan_and_scan: bool) -> Result<EncodedImage> {
        let bytes = std::fs::read(path).map_err(|e| GemmaError::io(path, e))?;
        self.encode_image(&bytes, &path.display().to_string(), pan_and_scan)
    }

    /// A chat whose messages hold `{"type": "image"}` content parts, with
    /// `images` in the order of those parts: rendered with the chat
    /// template, each `<start_of_image>` expanded as `Gemma3Processor` does
    /// (`\n\n<start_of_image>` + soft tokens + `<end_of_image>\n\n`, so the
    /// newlines merge with their neighbours as transformers tokenizes them;
    /// an image with pan-and-scan crops becomes "Here is the original image
    /// … and here are some crops to help you see better …" with one run per
    /// crop), encoded; returns the ids and every run placed on its soft tokens.
    pub fn encode_chat_images(&self, messages: &serde_json::Value, images: &[EncodedImage], kwargs: &serde_json::Map<String, serde_json::Value>) -> Result<(Vec<u32>, Vec<MediaInput>)> {
        if images.is_empty() {
            return Ok((self.encode_chat_kwargs(messages, None, kwargs)?, Vec::new()));
        }
        let Some(v) = &self.vision else { return Err(GemmaError::invalid("image", "this model takes text only (its checkpoint has no vision tower)")) };
        let name = |id: u32| self.tokenizer.id_to_token(id).ok_or_else(|| GemmaError::invalid("image", format!("the tokenizer has no token {id} for images")));
        let (boi, img, eoi) = (name(v.spec.boi_token)?, name(v.spec.image_token)?, name(v.spec.eoi_token)?);
        let text = self.tokenizer.apply_chat_template_kwargs(messages, None, true, kwargs)?;
        let pieces: Vec<&str> = text.split(boi.as_str()).collect();
        if pieces.len() - 1 != images.len() {
            return Err(GemmaError::invalid("image", format!("the prompt has {} image places for {} images (one `{{\"type\": \"image\"}}` content part per image)", pieces.len() - 1, images.len())));
        }
        let run = format!("\n\n{boi}{}{eoi}\n\n", img.repeat(v.spec.tokens_per_image));
        let mut expanded = pieces[0].to_string();
        for (im, piece) in images.iter().zip(&pieces[1..]) {
            if im.runs.len() > 1 {
                let crops = vec![run.as_str(); im.runs.len() - 1].join(" ");
                expanded.push_str(&format!("Here is the original image {run} and here are some crops to help you see better {crops}"));
            } else {
                expanded.push_str(&run);
            }
            expanded.push_str(piece);
        }
        let ids = self.tokenizer.encode(&expanded, self.tokenizer.add_bos)?;
        let starts: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == v.spec.image_token && (i == 0 || ids[i - 1] != v.spec.image_token)).collect();
        let runs: Vec<(&Arc<[f32]>, [u8; 32])> = images
            .iter()
            .flat_map(|im| im.runs.iter().enumerate().map(move |(i, r)| (r, Sha256::new().chain_update(im.key).chain_update([i as u8]).finalize().into())))
            .collect();
        if starts.len() != runs.len() {
            return Err(GemmaError::invalid("image", format!("the prompt's text holds {} soft-token runs for {} images and crops (does it contain image tokens itself?)", starts.len(), runs.len())));
        }
        let media = starts.iter().zip(runs).map(|(&at, (rows, key))| MediaInput { at, rows: rows.clone(), key }).collect();
        Ok((ids, media))
    }
}
