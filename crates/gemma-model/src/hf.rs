//! Loading a model from a Hugging Face folder (`config.json` + safetensors).

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
    let set = SafetensorsSet::open_folder(folder)?;
    let weights = Weights::from_safetensors(&set, &config, dtype, progress)?;
    Model::new(config, weights)
}
