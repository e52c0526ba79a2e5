//! A set of memory-mapped safetensors files: one `model.safetensors`, or the
//! shards listed by `model.safetensors.index.json`.

use gemma_core::{DType, GemmaError, Result, Storage};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype as StDtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Name of the single-file checkpoint in a Hugging Face folder.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index in a Hugging Face folder.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where a tensor lives and what it looks like.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name in the checkpoint.
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Element type as safetensors names it (e.g. `BF16`).
    pub dtype: String,
    /// Index of the shard holding it.
    shard: usize,
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// Memory-mapped tensors of one checkpoint, possibly over several shards.
pub struct SafetensorsSet {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, TensorInfo>,
}

#[derive(serde::Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

impl SafetensorsSet {
    /// Open the checkpoint in a model folder (single file or sharded).
    pub fn open_folder(folder: &Path) -> Result<Self> {
        let index = folder.join(INDEX_FILE);
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| GemmaError::io(&index, e))?;
            let idx: Index = serde_json::from_str(&text).map_err(|e| GemmaError::format(&index, e.to_string()))?;
            let mut files: Vec<&String> = idx.weight_map.values().collect();
            files.sort();
            files.dedup();
            if files.is_empty() {
                return Err(GemmaError::format(&index, "weight_map is empty"));
            }
            let paths: Vec<PathBuf> = files.iter().map(|f| folder.join(f)).collect();
            let set = Self::open_files(&paths)?;
            for (name, file) in &idx.weight_map {
                if !set.tensors.contains_key(name) {
                    return Err(GemmaError::format(&index, format!("tensor `{name}` is listed in {file} but that shard does not contain it")));
                }
            }
            return Ok(set);
        }
        let single = folder.join(SINGLE_FILE);
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        Err(GemmaError::io(
            folder.join(SINGLE_FILE),
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no weights in {}: expected {SINGLE_FILE}, {INDEX_FILE} with its shards, or a Flax flax_model.msgpack (or its index)", folder.display())),
        ))
    }

    /// Open the given safetensors files as one checkpoint.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut tensors = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| GemmaError::io(path, e))?;
            // SAFETY: the file is opened read-only; we assume it is not
            // modified while mapped, as every mmap-based loader does.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| GemmaError::io(path, e))?;
            crate::folio_writer::advise_huge(&mmap);
            let st = SafeTensors::deserialize(&mmap).map_err(|e| GemmaError::format(path, format!("not a valid safetensors file: {e}")))?;
            for (name, view) in st.tensors() {
                let info = TensorInfo { name: name.clone(), shape: view.shape().to_vec(), dtype: format!("{:?}", view.dtype()), shard: i };
                if tensors.insert(name.clone(), info).is_some() {
                    return Err(GemmaError::format(path, format!("tensor `{name}` appears in more than one shard")));
                }
            }
            shards.push(Shard { path: path.clone(), mmap });
        }
        Ok(Self { shards, tensors })
    }

    /// All tensors, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.tensors.values()
    }

    /// Look a tensor up by name.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Paths of the files backing this set.
    pub fn paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Find a tensor and run `f` on its view.
    fn with_view<T>(&self, name: &str, f: impl FnOnce(&safetensors::tensor::TensorView<'_>) -> Result<T>) -> Result<T> {
        let info = self.tensors.get(name).ok_or_else(|| GemmaError::MissingTensor { name: name.to_string() })?;
        let shard = &self.shards[info.shard];
        let st = SafeTensors::deserialize(&shard.mmap).map_err(|e| GemmaError::format(&shard.path, format!("not a valid safetensors file: {e}")))?;
        let view = st.tensor(name).map_err(|e| GemmaError::format(&shard.path, format!("tensor `{name}`: {e}")))?;
        f(&view)
    }

    /// Read a tensor into owned storage of its own dtype (f32, f16 or bf16).
    pub fn load(&self, name: &str) -> Result<(Vec<usize>, Storage)> {
        self.with_view(name, |view| {
            let bytes = view.data();
            let storage = match view.dtype() {
                StDtype::F32 => Storage::F32(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
                StDtype::BF16 => Storage::BF16(bytes.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))).collect()),
                StDtype::F16 => Storage::F16(bytes.chunks_exact(2).map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]]))).collect()),
                other => return Err(GemmaError::UnsupportedDType { name: name.to_string(), dtype: format!("{other:?}") }),
            };
            Ok((view.shape().to_vec(), storage))
        })
    }

    /// Read an integer tensor (I64 or I32) as i64 values.
    pub fn load_i64(&self, name: &str) -> Result<Vec<i64>> {
        self.with_view(name, |view| {
            let b = view.data();
            match view.dtype() {
                StDtype::I64 => Ok(b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk"))).collect()),
                StDtype::I32 => Ok(b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4-byte chunk")) as i64).collect()),
                other => Err(GemmaError::UnsupportedDType { name: name.to_string(), dtype: format!("{other:?}") }),
            }
        })
    }

    /// The raw little-endian bytes of a tensor, whatever its dtype.
    pub fn load_bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.with_view(name, |view| Ok(view.data().to_vec()))
    }

    /// The dtype a tensor would load as, if supported.
    pub fn dtype_of(&self, name: &str) -> Option<DType> {
        match self.tensors.get(name)?.dtype.as_str() {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            _ => None,
        }
    }
}
