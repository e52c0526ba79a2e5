//! Loading a model from a Hugging Face folder (`config.json` + safetensors,
//! or Flax `flax_model.msgpack` when the folder has no safetensors).

use crate::config::GemmaConfig;
use crate::forward::Model;
use crate::weights::Weights;
use gemma_core::{DType, GemmaError, Result};
use gemma_formats::SafetensorsSet;
use std::path::Path;

/// Load config and weights from a model folder. `dtype` converts the weight
/// matrices at load time (None keeps the checkpoint's dtype);
/// `progress(done, total)` is called after each tensor.
pub fn load_model(folder: &Path, dtype: Option<DType>, progress: &mut dyn FnMut(usize, usize)) -> Result<Model> {
    if !folder.is_dir() {
        return Err(GemmaError::io(folder, std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found")));
    }
    let config = GemmaConfig::from_file(&folder.join("config.json"))?;
    // A folder with both kinds (the Hub's `revision="flax"` beside the main
    // one) loads the safetensors.
    let has_safetensors = [gemma_formats::safetensors_set::SINGLE_FILE, gemma_formats::safetensors_set::INDEX_FILE].iter().any(|f| folder.join(f).is_file());
    let has_flax = [gemma_formats::flax_msgpack::FLAX_FILE, gemma_formats::flax_msgpack::FLAX_INDEX_FILE].iter().any(|f| folder.join(f).is_file());
    let weights = if !has_safetensors && has_flax {
        Weights::from_flax(&gemma_formats::FlaxCheckpoint::open_folder(folder)?, &config, dtype, progress)?
    } else {
        Weights::from_safetensors(&SafetensorsSet::open_folder(folder)?, &config, dtype, progress)?
    };
    Model::new(config, weights)
}
