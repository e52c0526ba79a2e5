//! Flax/JAX checkpoints as Hugging Face saves them: `flax_model.msgpack`
//! (or the shards of `flax_model.msgpack.index.json`), each a msgpack map
//! of nested parameter dicts whose leaves are `flax.serialization` arrays:
//! msgpack extension 1 holding `(shape, dtype name, raw C-order bytes)`.
//! Parsed once into flat `a/b/c` names; the file is read into memory (Flax
//! writes no alignment, so there is nothing to map in place). Bounded:
//! every length is checked against the bytes left, nesting depth is capped.

use gemma_core::{GemmaError, Result, Storage};
use half::{bf16, f16};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the single-file Flax checkpoint in a Hugging Face folder.
pub const FLAX_FILE: &str = "flax_model.msgpack";
/// Name of the Flax shard index.
pub const FLAX_INDEX_FILE: &str = "flax_model.msgpack.index.json";

const MAX_DEPTH: usize = 32;

/// One array: shape, numpy dtype name and where its bytes are.
#[derive(Debug, Clone)]
pub struct FlaxTensor {
    /// Shape, outermost first (Flax kernels are `[in, out]`).
    pub shape: Vec<usize>,
    /// numpy dtype name (`float32`, `bfloat16`, `float16`).
    pub dtype: String,
    file: usize,
    start: usize,
    end: usize,
}

/// The arrays of a Flax checkpoint by `/`-joined parameter path.
pub struct FlaxCheckpoint {
    files: Vec<(PathBuf, Vec<u8>)>,
    tensors: BTreeMap<String, FlaxTensor>,
}

/// A msgpack value as far as checkpoints need it.
enum Item {
    Map(Vec<(String, Item)>),
    Array(Vec<Item>),
    Int(i64),
    Str(String),
    Bin(usize, usize),
    Ext(i8, usize, usize),
    Other,
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Parser<'_> {
    fn err(&self, m: impl Into<String>) -> GemmaError {
        GemmaError::format(self.path, format!("msgpack at byte {}: {}", self.at, m.into()))
    }

    fn take(&mut self, n: usize) -> Result<(usize, usize)> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| self.err(format!("{n} bytes needed, the file ends")))?;
        let r = (self.at, end);
        self.at = end;
        Ok(r)
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        let (s, e) = self.take(n)?;
        Ok(self.b[s..e].iter().fold(0u64, |a, &x| (a << 8) | x as u64))
    }

    fn item(&mut self, depth: usize) -> Result<Item> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let (s, _) = self.take(1)?;
        let tag = self.b[s];
        Ok(match tag {
            0x00..=0x7f => Item::Int(tag as i64),
            0xe0..=0xff => Item::Int(tag as i8 as i64),
            0x80..=0x8f => self.map((tag & 0x0f) as usize, depth)?,
            0xde => {
                let n = self.uint(2)? as usize;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.uint(4)? as usize;
                self.map(n, depth)?
            }
            0x90..=0x9f => self.array((tag & 0x0f) as usize, depth)?,
            0xdc => {
                let n = self.uint(2)? as usize;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.uint(4)? as usize;
                self.array(n, depth)?
            }
            0xa0..=0xbf => self.str((tag & 0x1f) as usize)?,
            0xd9 => {
                let n = self.uint(1)? as usize;
                self.str(n)?
            }
            0xda => {
                let n = self.uint(2)? as usize;
                self.str(n)?
            }
            0xdb => {
                let n = self.uint(4)? as usize;
                self.str(n)?
            }
            0xc4..=0xc6 => {
                let n = self.uint(1 << (tag - 0xc4))? as usize;
                let (s, e) = self.take(n)?;
                Item::Bin(s, e)
            }
            0xc7..=0xc9 => {
                let n = self.uint(1 << (tag - 0xc7))? as usize;
                let (t, _) = self.take(1)?;
                let (s, e) = self.take(n)?;
                Item::Ext(self.b[t] as i8, s, e)
            }
            0xd4..=0xd8 => {
                let n = 1usize << (tag - 0xd4);
                let (t, _) = self.take(1)?;
                let (s, e) = self.take(n)?;
                Item::Ext(self.b[t] as i8, s, e)
            }
            0xcc..=0xcf => Item::Int(self.uint(1 << (tag - 0xcc))? as i64),
            0xd0..=0xd3 => {
                let n = 1usize << (tag - 0xd0);
                let v = self.uint(n)?;
                let shift = 64 - 8 * n as u32;
                Item::Int(((v << shift) as i64) >> shift)
            }
            0xca => {
                self.take(4)?;
                Item::Other
            }
            0xcb => {
                self.take(8)?;
                Item::Other
            }
            0xc0 | 0xc2 | 0xc3 => Item::Other,
            other => return Err(self.err(format!("unsupported msgpack type 0x{other:02x}"))),
        })
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Item> {
        let mut v = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let key = match self.item(depth + 1)? {
                Item::Str(s) => s,
                Item::Int(i) => i.to_string(),
                _ => return Err(self.err("map keys must be strings")),
            };
            v.push((key, self.item(depth + 1)?));
        }
        Ok(Item::Map(v))
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Item> {
        let mut v = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            v.push(self.item(depth + 1)?);
        }
        Ok(Item::Array(v))
    }

    fn str(&mut self, n: usize) -> Result<Item> {
        let (s, e) = self.take(n)?;
        let t = std::str::from_utf8(&self.b[s..e]).map_err(|_| self.err("a string is not UTF-8"))?;
        Ok(Item::Str(t.to_string()))
    }
}

/// Bytes per element of a numpy dtype name we load.
fn dtype_size(name: &str) -> Option<usize> {
    match name {
        "float32" => Some(4),
        "bfloat16" | "float16" => Some(2),
        _ => None,
    }
}

impl FlaxCheckpoint {
    /// Open the Flax checkpoint of a model folder (single file or sharded).
    pub fn open_folder(folder: &Path) -> Result<Self> {
        let index = folder.join(FLAX_INDEX_FILE);
        let files: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| GemmaError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| GemmaError::format(&index, e.to_string()))?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| GemmaError::format(&index, "`weight_map` is missing"))?;
            let mut names: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.sort();
            names.dedup();
            if names.is_empty() || names.iter().any(|n| n.contains('/') || n.contains("..")) {
                return Err(GemmaError::format(&index, "`weight_map` must name shard files in the folder"));
            }
            names.iter().map(|n| folder.join(n)).collect()
        } else {
            vec![folder.join(FLAX_FILE)]
        };
        let mut ck = Self { files: Vec::new(), tensors: BTreeMap::new() };
        for path in files {
            let bytes = std::fs::read(&path).map_err(|e| GemmaError::io(&path, e))?;
            ck.add(path, bytes)?;
        }
        Ok(ck)
    }

    /// Parse one file's bytes (exposed for fuzzing).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut ck = Self { files: Vec::new(), tensors: BTreeMap::new() };
        ck.add(path.to_path_buf(), bytes)?;
        Ok(ck)
    }

    fn add(&mut self, path: PathBuf, bytes: Vec<u8>) -> Result<()> {
        let file = self.files.len();
        let root = {
            let mut p = Parser { b: &bytes, at: 0, path: &path };
            let root = p.item(0)?;
            if p.at != bytes.len() {
                return Err(p.err("trailing bytes after the checkpoint"));
            }
            root
        };
        let Item::Map(_) = root else { return Err(GemmaError::format(&path, "a Flax checkpoint is a msgpack map")) };
        let mut stack = vec![(String::new(), root)];
        while let Some((prefix, item)) = stack.pop() {
            match item {
                Item::Map(entries) => {
                    for (k, v) in entries {
                        stack.push((if prefix.is_empty() { k } else { format!("{prefix}/{k}") }, v));
                    }
                }
                Item::Ext(1, s, e) => {
                    let t = self.array_leaf(&path, &bytes, s, e, file)?;
                    if self.tensors.insert(prefix.clone(), t).is_some() {
                        return Err(GemmaError::format(&path, format!("array `{prefix}` appears twice")));
                    }
                }
                _ => {}
            }
        }
        self.files.push((path, bytes));
        Ok(())
    }

    /// An ndarray leaf: msgpack `(shape, dtype, bytes)` inside extension 1.
    fn array_leaf(&self, path: &Path, bytes: &[u8], s: usize, e: usize, file: usize) -> Result<FlaxTensor> {
        let mut p = Parser { b: &bytes[..e], at: s, path };
        let bad = |m: &str| GemmaError::format(path, format!("array at byte {s}: {m}"));
        let Item::Array(parts) = p.item(1)? else { return Err(bad("expected (shape, dtype, data)")) };
        let [Item::Array(dims), Item::Str(dtype), Item::Bin(ds, de)] = parts.as_slice() else { return Err(bad("expected (shape, dtype, data)")) };
        let shape = dims
            .iter()
            .map(|d| match d {
                Item::Int(n) if *n >= 0 => Ok(*n as usize),
                _ => Err(bad("dimensions must be non-negative integers")),
            })
            .collect::<Result<Vec<usize>>>()?;
        let size = dtype_size(dtype).ok_or_else(|| GemmaError::Unsupported(format!("Flax array of dtype `{dtype}` in {}", path.display())))?;
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(size)).ok_or_else(|| bad("too large"))?;
        if n != de - ds {
            return Err(bad(&format!("shape {shape:?} × {size} bytes needs {n} bytes, found {}", de - ds)));
        }
        Ok(FlaxTensor { shape, dtype: dtype.clone(), file, start: *ds, end: *de })
    }

    /// The array named `name`, if present.
    pub fn info(&self, name: &str) -> Option<&FlaxTensor> {
        self.tensors.get(name)
    }

    /// All array names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The array `name` as typed storage with its shape.
    pub fn load(&self, name: &str) -> Result<(Vec<usize>, Storage)> {
        let t = self.tensors.get(name).ok_or_else(|| GemmaError::MissingTensor { name: name.to_string() })?;
        let b = &self.files[t.file].1[t.start..t.end];
        let st = match t.dtype.as_str() {
            "float32" => Storage::F32(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            "bfloat16" => Storage::BF16(b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
            "float16" => Storage::F16(b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
            other => return Err(GemmaError::Unsupported(format!("Flax dtype `{other}`"))),
        };
        Ok((t.shape.clone(), st))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// msgpack of `{"a": {"k": ndarray}}` with a `[2, 3]` float32 array.
    fn sample() -> Vec<u8> {
        let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let mut inner = vec![0x93, 0x92, 0x02, 0x03, 0xa7];
        inner.extend_from_slice(b"float32");
        inner.extend_from_slice(&[0xc4, data.len() as u8]);
        inner.extend_from_slice(&data);
        let mut b = vec![0x81, 0xa1, b'a', 0x81, 0xa1, b'k', 0xc7, inner.len() as u8, 0x01];
        b.extend_from_slice(&inner);
        b
    }

    #[test]
    fn reads_nested_arrays() {
        let ck = FlaxCheckpoint::from_bytes(Path::new("x"), sample()).unwrap();
        let (shape, st) = ck.load("a/k").unwrap();
        assert_eq!(shape, [2, 3]);
        assert!(matches!(st, Storage::F32(v) if v == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    }

    #[test]
    fn truncated_or_lying_files_are_errors() {
        let b = sample();
        for cut in 0..b.len() {
            assert!(FlaxCheckpoint::from_bytes(Path::new("x"), b[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        let mut lie = b.clone();
        lie[12] = 0x04; // shape [2, 4]: 32 bytes needed, 24 there
        assert!(FlaxCheckpoint::from_bytes(Path::new("x"), lie).is_err());
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100).chain([0x00]).collect();
        assert!(FlaxCheckpoint::from_bytes(Path::new("x"), deep).is_err());
    }
}
