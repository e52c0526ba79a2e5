//! Writing a model's vision tower as llama.cpp's `mmproj` GGUF (beside the
//! text GGUF `gemma quantize` writes): llama.cpp's keys and tensor names
//! (`gemma_model::towers::mmproj::export`), weight matrices in the type
//! asked (f16 by default, as llama.cpp's converter writes them), norms,
//! biases and embeddings in f32.

use crate::Gemma;
use gemma_core::{DType, GemmaError, Result};
use gemma_formats::{GgufValue, GgufWriter};
use gemma_model::towers::{mmproj, VisionTower};
use std::path::{Path, PathBuf};

/// The mmproj path llama.cpp's releases use beside a text GGUF:
/// `dir/model.gguf` → `dir/mmproj-model.gguf`.
pub fn default_path(text_gguf: &Path) -> PathBuf {
    let name = text_gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.gguf".into());
    text_gguf.with_file_name(format!("mmproj-{name}"))
}

/// Write `g`'s vision tower to `out` with weight matrices in `matrices`
/// (f32, f16, bf16 or q8_0); returns the bytes written.
pub fn write_mmproj(g: &Gemma, out: &Path, matrices: DType) -> Result<u64> {
    let v = g.vision.as_ref().ok_or_else(|| GemmaError::invalid("mmproj", "the model has no vision tower to write"))?;
    if !matches!(matrices, DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0) {
        return Err(GemmaError::Unsupported(format!("mmproj matrices in {matrices} (llama.cpp's vision encoder takes f32, f16, bf16 or q8_0)")));
    }
    let (kv, tensors) = match &v.tower {
        VisionTower::Siglip(tower) => mmproj::export(tower),
        VisionTower::Gemma4(tower) => gemma_model::towers::mmproj_gemma4::export(tower),
    };
    let mut w = GgufWriter::new();
    for (k, value) in kv {
        w.set(&k, value);
    }
    let name = g.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    w.set("general.name", GgufValue::String(name));
    let file_type = match matrices {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q8_0 => 7,
        _ => 32, // bf16
    };
    w.set("general.file_type", GgufValue::U32(file_type));
    w.set("general.quantization_version", GgufValue::U32(2));
    for t in tensors {
        // A row must fill whole blocks of the type (q8_0: 32 values).
        let dtype = if t.matrix && (t.dims[0] as usize).is_multiple_of(matrices.block_size()) { matrices } else if t.matrix && matrices != DType::F32 { DType::F16 } else { DType::F32 };
        let mut data = Vec::new();
        gemma_quant::quantize(dtype, &t.values, &mut data)?;
        w.add_tensor(&t.name, t.dims, dtype, data)?;
    }
    w.write(out)?;
    Ok(std::fs::metadata(out).map_err(|e| GemmaError::io(out, e))?.len())
}
