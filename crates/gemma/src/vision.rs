//! Images in prompts: the vision tower loaded beside the text model, image
//! files encoded to soft tokens (cached by content hash, so a multi-turn
//! chat does not encode an image again), and chat prompts expanded as
//! transformers' `Gemma3Processor` expands them.

use crate::Gemma;
use gemma_core::{GemmaError, Result};
use gemma_generate::MediaInput;
use gemma_model::towers::{preprocess, TowerConfig, TowerEncoding, TowerInput, VisionSpec, VisionTower};
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
    /// The tower of llama.cpp's `mmproj` GGUF for `model`, its image token
    /// ids from the text model's tokenizer.
    pub fn load_mmproj(path: &Path, model: &gemma_model::Model, tokenizer: &gemma_tokenizer::GemmaTokenizer) -> Result<Self> {
        let file = gemma_formats::GgufFile::open(path)?;
        let arch = file.get("general.architecture").and_then(gemma_formats::GgufValue::as_str).unwrap_or("");
        if arch != gemma_model::towers::mmproj::ARCH {
            return Err(GemmaError::format(path, format!("an mmproj file has general.architecture \"clip\"; this one has \"{arch}\" (is it the text model?)")));
        }
        let id = |t: &str| tokenizer.token_to_id(t).ok_or_else(|| GemmaError::invalid("mmproj", format!("the text model's tokenizer has no {t} token: it does not take images")));
        let kind = gemma_model::towers::mmproj::projector_type(&file).map_err(|e| GemmaError::format(path, e.to_string()))?;
        let hidden = model.config.hidden_size;
        let (spec, tower) = if kind == gemma_model::towers::mmproj_gemma4::PROJECTOR_GEMMA4 {
            // Gemma 4's tokens; the file holds no soft-token budget: transformers' default.
            let ids = (id("<|image|>")?, id("<|image>")?, id("<image|>")?);
            gemma_model::towers::mmproj_gemma4::load(&file, hidden, ids, 280)
        } else {
            let ids = (id("<image_soft_token>")?, id("<start_of_image>")?, id("<end_of_image>")?);
            gemma_model::towers::mmproj::load(&file, hidden, ids)
        }
        .map_err(|e| GemmaError::format(path, e.to_string()))?;
        Ok(Self { spec, tower, cache: Mutex::new(HashMap::new()) })
    }

    /// With Gemma 4's soft-token budget `n` (one of 70, 140, 280, 560,
    /// 1120), if given; Gemma 3's images have a fixed count and refuse it.
    pub fn with_image_tokens(mut self, n: Option<usize>) -> Result<Self> {
        let Some(n) = n else { return Ok(self) };
        if !self.spec.variable_tokens() {
            return Err(GemmaError::invalid("image_tokens", format!("Gemma 3 images are always {} soft tokens; the budget is Gemma 4's", self.spec.tokens_per_image)));
        }
        if !gemma_model::towers::GEMMA4_SOFT_TOKENS.contains(&n) {
            return Err(GemmaError::invalid("image_tokens", format!("{n} is not one of {:?}", gemma_model::towers::GEMMA4_SOFT_TOKENS)));
        }
        self.spec.tokens_per_image = n;
        Ok(self)
    }

    /// The tower of a Hugging Face folder, if its config has one and the
    /// checkpoint holds its weights.
    pub fn load(folder: &Path, text_hidden: usize) -> Result<Option<Self>> {
        let path = folder.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| GemmaError::io(&path, e))?;
        let top: serde_json::Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(&path, e.to_string()))?;
        let Some(mut spec) = VisionSpec::from_config(&top)? else { return Ok(None) };
        if spec.variable_tokens() {
            if let Some(n) = processor_soft_tokens(folder)? {
                spec.tokens_per_image = n;
            }
        }
        let set = gemma_formats::SafetensorsSet::open_folder(folder)?;
        Ok(VisionTower::from_safetensors(&set, &spec, text_hidden)?.map(|tower| Self { spec, tower, cache: Mutex::new(HashMap::new()) }))
    }
}

/// Gemma 4's soft-token budget from the folder's processor files
/// (`preprocessor_config.json`'s `max_soft_tokens`, or
/// `processor_config.json`'s `image_processor.max_soft_tokens`), if given.
fn processor_soft_tokens(folder: &Path) -> Result<Option<usize>> {
    for (file, pointer) in [("preprocessor_config.json", "/max_soft_tokens"), ("processor_config.json", "/image_processor/max_soft_tokens")] {
        let path = folder.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(&path, e.to_string()))?;
        if let Some(x) = v.pointer(pointer) {
            let n = x.as_u64().map(|n| n as usize).filter(|n| gemma_model::towers::GEMMA4_SOFT_TOKENS.contains(n));
            return n.map(Some).ok_or_else(|| GemmaError::format(&path, format!("max_soft_tokens {x} is not one of {:?}", gemma_model::towers::GEMMA4_SOFT_TOKENS)));
        }
    }
    Ok(None)
}

/// An image decoded and preprocessed: its views (the whole image, then any
/// pan-and-scan crops) wait for the tower, or came encoded from the cache.
/// [`Gemma::encode_step`] runs the tower one layer at a time.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// SHA-256 of the file's bytes and the pan-and-scan setting.
    pub key: [u8; 32],
    /// Views in order, as the tower takes them (taken as each is encoded).
    pixels: Vec<Option<TowerInput>>,
    /// Encoded views so far.
    done: Runs,
    /// The view being encoded.
    current: Option<TowerEncoding>,
    /// Views in all.
    views: usize,
    /// Soft tokens of each view.
    tokens: Vec<usize>,
}

impl PreparedImage {
    /// Views (soft-token runs) the image becomes: 1, plus its crops.
    pub fn views(&self) -> usize {
        self.views
    }

    /// The image as a prompt needs it: its key and each view's soft tokens.
    pub fn slot(&self) -> ImageSlot {
        (self.key, self.tokens.clone())
    }

    /// Views encoded so far.
    pub fn encoded_views(&self) -> usize {
        self.done.len()
    }

    /// The soft tokens, once every view is encoded.
    pub fn encoded(&self) -> Option<EncodedImage> {
        (self.done.len() == self.views).then(|| EncodedImage { runs: self.done.clone(), key: self.key })
    }
}

/// An image as a prompt needs it: its key and the soft tokens of each view
/// (the whole image, then its crops).
pub type ImageSlot = ([u8; 32], Vec<usize>);

impl EncodedImage {
    /// The image as a prompt needs it, for a model `hidden` wide.
    pub fn slot(&self, hidden: usize) -> ImageSlot {
        (self.key, self.runs.iter().map(|r| r.len() / hidden.max(1)).collect())
    }
}

/// Where one soft-token run goes in a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePlace {
    /// Prompt index of its first soft token.
    pub at: usize,
    /// Which image (in prompt order).
    pub image: usize,
    /// Which view of it (0: the whole image, then the crops).
    pub view: usize,
    /// Key of the run (the image's key and the view).
    pub key: [u8; 32],
    /// Soft tokens in the run.
    pub tokens: usize,
}

/// The media of a prompt from its places and the encoded images (soft
/// tokens `hidden` wide).
pub fn place_media(places: &[ImagePlace], images: &[EncodedImage], hidden: usize) -> Result<Vec<MediaInput>> {
    places
        .iter()
        .map(|p| {
            let rows = images.get(p.image).and_then(|im| im.runs.get(p.view)).ok_or_else(|| GemmaError::invalid("image", format!("no view {} of image {}", p.view, p.image)))?;
            if rows.len() != p.tokens * hidden {
                return Err(GemmaError::invalid("image", format!("view {} of image {} has {} values, not {} soft tokens of width {hidden}", p.view, p.image, rows.len(), p.tokens)));
            }
            Ok(MediaInput { at: p.at, rows: rows.clone(), key: p.key })
        })
        .collect()
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
        let mut img = self.prepare_image(bytes, what, pan_and_scan)?;
        while !self.encode_step(&mut img)? {}
        img.encoded().ok_or_else(|| GemmaError::invalid("image", format!("{what}: the encode did not finish")))
    }

    /// Decode and preprocess one image file's bytes (`what` names it in
    /// errors) for [`Gemma::encode_step`]; an image seen before comes
    /// encoded from the cache.
    pub fn prepare_image(&self, bytes: &[u8], what: &str, pan_and_scan: bool) -> Result<PreparedImage> {
        let Some(v) = &self.vision else {
            return Err(GemmaError::invalid("image", format!("{what}: this model takes text only (its checkpoint has no vision tower)")));
        };
        // Pan-and-scan is Gemma 3's (Gemma 4 keeps the aspect ratio instead):
        // for Gemma 4 the flag changes nothing, the cache key included.
        let pan_and_scan = pan_and_scan && !v.spec.variable_tokens();
        let key: [u8; 32] = Sha256::new().chain_update(bytes).chain_update([pan_and_scan as u8]).finalize().into();
        let hidden = self.model.config.hidden_size;
        if let Some(runs) = v.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            let tokens = runs.iter().map(|r| r.len() / hidden).collect();
            return Ok(PreparedImage { key, pixels: Vec::new(), views: runs.len(), done: runs, current: None, tokens });
        }
        let img = gemma_formats::image_file::decode_rgb8(bytes, what)?;
        let mut views = vec![img.clone()];
        if pan_and_scan {
            views.extend(preprocess::pan_and_scan(&img, &preprocess::PanAndScan::default()));
        }
        let pixels: Vec<Option<TowerInput>> = views.iter().map(|im| v.spec.preprocess(im).map(Some)).collect::<Result<_>>()?;
        let tokens = pixels
            .iter()
            .map(|p| match (p, &v.spec.tower) {
                (Some(TowerInput::Patches(p)), TowerConfig::Gemma4(c)) => p.positions.len() / (c.pooling_kernel_size * c.pooling_kernel_size),
                _ => v.spec.tokens_per_image,
            })
            .collect();
        Ok(PreparedImage { key, views: pixels.len(), pixels, done: Vec::new(), current: None, tokens })
    }

    /// Run one layer of the tower on `img`'s next view; true once every
    /// view is encoded (the image is then cached for later requests).
    pub fn encode_step(&self, img: &mut PreparedImage) -> Result<bool> {
        if img.done.len() == img.views {
            return Ok(true);
        }
        let Some(v) = &self.vision else { return Err(GemmaError::invalid("image", "this model takes text only (its checkpoint has no vision tower)")) };
        // Encoded meanwhile by another request (the choices of one request share their images).
        if img.done.is_empty() && img.current.is_none() {
            if let Some(runs) = v.cache.lock().ok().and_then(|c| c.get(&img.key).cloned()) {
                (img.done, img.pixels) = (runs, Vec::new());
                return Ok(true);
            }
        }
        let current = match &mut img.current {
            Some(c) => c,
            None => {
                let Some(pixels) = img.pixels.get_mut(img.done.len()).and_then(Option::take) else {
                    return Err(GemmaError::invalid("image", "an image view was lost before its encode"));
                };
                img.current.insert(v.tower.begin(&pixels)?)
            }
        };
        if let Some(rows) = v.tower.step(current) {
            img.done.push(Arc::from(rows));
            img.current = None;
        }
        if img.done.len() < img.views {
            return Ok(false);
        }
        if let Ok(mut c) = v.cache.lock() {
            if c.len() >= CACHED_IMAGES {
                c.clear();
            }
            c.insert(img.key, img.done.clone());
        }
        Ok(true)
    }

    /// Steps of the tower per view (for progress and scheduling).
    pub fn encode_steps(&self) -> usize {
        self.vision.as_ref().map_or(0, |v| v.tower.steps())
    }

    /// [`Gemma::encode_image`] of a file.
    pub fn encode_image_file(&self, path: &Path, pan_and_scan: bool) -> Result<EncodedImage> {
        let bytes = std::fs::read(path).map_err(|e| GemmaError::io(path, e))?;
        self.encode_image(&bytes, &path.display().to_string(), pan_and_scan)
    }

    /// A chat whose messages hold `{"type": "image"}` content parts, with
    /// `images` in the order of those parts: rendered with the chat
    /// template, each image mark expanded as the processor does
    /// ([`Gemma::image_prompt`]), encoded; returns the ids and every run
    /// placed on its soft tokens.
    pub fn encode_chat_images(&self, messages: &serde_json::Value, images: &[EncodedImage], kwargs: &serde_json::Map<String, serde_json::Value>) -> Result<(Vec<u32>, Vec<MediaInput>)> {
        if images.is_empty() {
            return Ok((self.encode_chat_kwargs(messages, None, kwargs)?, Vec::new()));
        }
        let text = self.tokenizer.apply_chat_template_kwargs(messages, None, true, kwargs)?;
        let slots: Vec<ImageSlot> = images.iter().map(|im| im.slot(self.model.config.hidden_size)).collect();
        let (ids, places) = self.image_prompt(&text, &slots)?;
        Ok((ids, place_media(&places, images, self.model.config.hidden_size)?))
    }

    /// A prompt `text` whose image marks (`VisionSpec::mark_token`: Gemma 3's
    /// `<start_of_image>`, Gemma 4's `<|image|>`) stand for `images`
    /// (key and soft tokens of each view, in order), expanded as the
    /// processors do — Gemma 3: `\n\n<start_of_image>` + soft tokens +
    /// `<end_of_image>\n\n`, so the newlines merge with their neighbours as
    /// transformers tokenizes them, and an image with pan-and-scan crops
    /// becomes "Here is the original image … and here are some crops to
    /// help you see better …" with one run per crop; Gemma 4: `<|image>` +
    /// the image's own number of soft tokens + `<image|>`, nothing around —
    /// encoded; returns the ids and where each run goes.
    pub fn image_prompt(&self, text: &str, images: &[ImageSlot]) -> Result<(Vec<u32>, Vec<ImagePlace>)> {
        let Some(v) = &self.vision else { return Err(GemmaError::invalid("image", "this model takes text only (its checkpoint has no vision tower)")) };
        let name = |id: u32| self.tokenizer.id_to_token(id).ok_or_else(|| GemmaError::invalid("image", format!("the tokenizer has no token {id} for images")));
        let (boi, img, eoi) = (name(v.spec.boi_token)?, name(v.spec.image_token)?, name(v.spec.eoi_token)?);
        let mark = name(v.spec.mark_token())?;
        let mark = mark.as_str();
        let pieces: Vec<&str> = text.split(mark).collect();
        if pieces.len() - 1 != images.len() {
            return Err(GemmaError::invalid("image", format!("the prompt has {} image places for {} images (one image content part per image; the text itself must not hold {mark})", pieces.len() - 1, images.len())));
        }
        let run = |n: usize| if v.spec.variable_tokens() { format!("{boi}{}{eoi}", img.repeat(n)) } else { format!("\n\n{boi}{}{eoi}\n\n", img.repeat(n)) };
        let mut expanded = pieces[0].to_string();
        for ((_, tokens), piece) in images.iter().zip(&pieces[1..]) {
            match tokens.split_first() {
                Some((&first, crops)) if !crops.is_empty() => {
                    let crops: Vec<String> = crops.iter().map(|&n| run(n)).collect();
                    expanded.push_str(&format!("Here is the original image {} and here are some crops to help you see better {}", run(first), crops.join(" ")));
                }
                Some((&first, _)) => expanded.push_str(&run(first)),
                None => return Err(GemmaError::invalid("image", "an image without views")),
            }
            expanded.push_str(piece);
        }
        let ids = self.tokenizer.encode(&expanded, self.tokenizer.add_bos)?;
        let starts: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == v.spec.image_token && (i == 0 || ids[i - 1] != v.spec.image_token)).collect();
        let runs: Vec<(usize, usize, [u8; 32], usize)> = images
            .iter()
            .enumerate()
            .flat_map(|(i, (key, tokens))| tokens.iter().enumerate().map(move |(j, &n)| (i, j, Sha256::new().chain_update(key).chain_update([j as u8]).finalize().into(), n)))
            .collect();
        if starts.len() != runs.len() {
            return Err(GemmaError::invalid("image", format!("the prompt's text holds {} soft-token runs for {} images and crops (does it contain image tokens itself?)", starts.len(), runs.len())));
        }
        // A run must be whole: text holding soft-token ids itself would lengthen one.
        for (&at, &(_, _, _, tokens)) in starts.iter().zip(&runs) {
            if ids.get(at..at + tokens).is_none_or(|r| r.iter().any(|&t| t != v.spec.image_token)) || ids.get(at + tokens) == Some(&v.spec.image_token) {
                return Err(GemmaError::invalid("image", format!("the soft-token run at {at} is not {tokens} tokens long (does the text contain image tokens itself?)")));
            }
        }
        let places = starts.iter().zip(runs).map(|(&at, (image, view, key, tokens))| ImagePlace { at, image, view, key, tokens }).collect();
        Ok((ids, places))
    }
}
