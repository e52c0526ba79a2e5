//! GGUF (versions 2 and 3) reader: typed metadata, tensor directory, and
//! tensor data borrowed from a shared memory map. Every count, length, offset
//! and size is checked against the file before use, so a truncated or hostile
//! file gives an error, never an out-of-bounds read or a huge allocation.

use gemma_core::tensor::Bytes;
use gemma_core::{DType, GemmaError, Result};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `GGUF` as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of arrays accepted.
const MAX_DEPTH: usize = 4;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: elements of one type (arrays may nest).
    Array(Vec<GgufValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (any numeric type).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if it is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the innermost (columns).
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl GgufTensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape outermost first (PyTorch order), e.g. `[rows, cols]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// The parsed header of a GGUF file: everything but the tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor directory, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Alignment of the data section.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> String {
        format!("{what} at byte {} runs past the end of the file ({} bytes)", self.pos, self.buf.len())
    }

    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if n > self.buf.len() - self.pos {
            return Err(self.err(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self, what: &str) -> std::result::Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(format!("{what}: string length {len} exceeds the {} bytes left", self.remaining()));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what}: string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> std::result::Result<GgufValue, String> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8(what)?),
            1 => GgufValue::I8(self.u8(what)? as i8),
            2 => GgufValue::U16(self.u16(what)?),
            3 => GgufValue::I16(self.u16(what)? as i16),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(self.u32(what)? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.u8(what)? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{what}: boolean byte {b} is neither 0 nor 1")),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("{what}: arrays nested deeper than {MAX_DEPTH}"));
                }
                let elem = self.u32(what)?;
                let count = self.u64(what)?;
                // Every element takes at least one byte (8 for strings and arrays).
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => return Err(format!("{what}: unknown array element type {t}")),
                };
                if count > (self.remaining() / min) as u64 {
                    return Err(format!("{what}: array of {count} elements cannot fit in the {} bytes left", self.remaining()));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(self.u64(what)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(what)?)),
            t => return Err(format!("{what}: unknown value type {t}")),
        })
    }
}

impl GgufHeader {
    /// Parse the header of a whole GGUF file held in `buf`.
    pub fn parse(buf: &[u8]) -> std::result::Result<Self, String> {
        let mut c = Cursor { buf, pos: 0 };
        let magic = c.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(format!("not a GGUF file: magic is {:?}, expected \"GGUF\"", String::from_utf8_lossy(&magic.to_le_bytes())));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (only 2 and 3)"));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A key-value pair takes at least 12 bytes, a tensor entry at least 24.
        if n_kv > (c.remaining() / 12) as u64 {
            return Err(format!("metadata count {n_kv} cannot fit in a file of {} bytes", buf.len()));
        }
        if n_tensors > (c.remaining() / 24) as u64 {
            return Err(format!("tensor count {n_tensors} cannot fit in a file of {} bytes", buf.len()));
        }
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("key of metadata entry {i}"))?;
            let ty = c.u32(&format!("type of `{key}`"))?;
            let value = c.value(ty, &format!("value of `{key}`"), 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(format!("metadata key `{key}` appears twice"));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(format!("general.alignment {v:?} is not a power of two")),
            },
        };
        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor {i}"))?;
            let n_dims = c.u32(&format!("dimension count of `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut elements: u64 = 1;
            for _ in 0..n_dims {
                let d = c.u64(&format!("dimensions of `{name}`"))?;
                elements =
                    elements.checked_mul(d).filter(|&e| e <= buf.len() as u64 * 8).ok_or_else(|| format!("tensor `{name}` has absurd dimensions"))?;
                dims.push(d);
            }
            let ty = c.u32(&format!("type of `{name}`"))?;
            let dtype = DType::from_ggml_id(ty).ok_or_else(|| format!("tensor `{name}` has ggml type {ty}, which this engine does not support"))?;
            if dims[0] % dtype.block_size() as u64 != 0 {
                return Err(format!("tensor `{name}`: row length {} is not a multiple of the {dtype} block size {}", dims[0], dtype.block_size()));
            }
            let offset = c.u64(&format!("offset of `{name}`"))?;
            if offset % alignment != 0 {
                return Err(format!("tensor `{name}`: offset {offset} is not aligned to {alignment}"));
            }
            let size = elements / dtype.block_size() as u64 * dtype.block_bytes() as u64;
            if tensors.iter().any(|t| t.name == name) {
                return Err(format!("tensor `{name}` appears twice"));
            }
            tensors.push(GgufTensorInfo { name, dims, dtype, offset, size });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.size));
            if end.is_none_or(|e| e > buf.len() as u64) {
                return Err(format!(
                    "tensor `{}` ({} bytes at offset {}) lies past the end of the file ({} bytes): truncated?",
                    t.name,
                    t.size,
                    data_offset + t.offset,
                    buf.len()
                ));
            }
        }
        Ok(Self { version, metadata, tensors, alignment, data_offset })
    }
}

/// An open, memory-mapped GGUF file.
pub struct GgufFile {
    /// Where it was opened from.
    pub path: PathBuf,
    /// The parsed header.
    pub header: GgufHeader,
    map: Arc<Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("tensors", &self.header.tensors.len()).finish()
    }
}

impl GgufFile {
    /// Open and parse a GGUF file (memory-mapped, no copy).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Open and parse a GGUF file. The map is advised for huge pages (a file
    /// cached in 2 MiB folios, as every file gemma writes, maps on huge
    /// pages: see [`crate::folio_writer`]). With `hugepages`, the file is
    /// read into anonymous memory backed by transparent huge pages instead:
    /// resident memory stays the same, loading takes seconds longer, and it
    /// only decodes faster for a file another tool wrote in small pieces
    /// that is still cached on 4 KiB pages (5–10%).
    pub fn open_with(path: &Path, hugepages: bool) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| GemmaError::io(path, e))?;
        let map = if hugepages {
            use std::io::Read;
            let len = file.metadata().map_err(|e| GemmaError::io(path, e))?.len() as usize;
            let mut m = memmap2::MmapMut::map_anon(len).map_err(|e| GemmaError::io(path, e))?;
            // Advice only: without THP the copy still works, on 4 KiB pages.
            #[cfg(unix)]
            let _ = m.advise(memmap2::Advice::HugePage);
            (&file).read_exact(&mut m[..]).map_err(|e| GemmaError::io(path, e))?;
            m.make_read_only().map_err(|e| GemmaError::io(path, e))?
        } else {
            // SAFETY: read-only map; the file must not change while mapped.
            let m = unsafe { Mmap::map(&file) }.map_err(|e| GemmaError::io(path, e))?;
            crate::folio_writer::advise_huge(&m);
            m
        };
        let header = GgufHeader::parse(&map).map_err(|m| GemmaError::format(path, m))?;
        Ok(Self { path: path.to_path_buf(), header, map: Arc::new(map) })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.header.metadata.get(key)
    }

    /// A tensor's directory entry.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's bytes, borrowed from the map (no copy).
    pub fn tensor_bytes(&self, t: &GgufTensorInfo) -> Bytes {
        Bytes::Mapped { map: self.map.clone(), start: (self.header.data_offset + t.offset) as usize, len: t.size as usize }
    }
}

/// True when `path` starts with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).map(|_| u32::from_le_bytes(magic) == GGUF_MAGIC).unwrap_or(false)
}

/// llama.cpp's `general.file_type` values (`enum llama_ftype`) and their
/// names: what a GGUF file says it is (`Q4_K_M` is a mix: most matrices
/// Q4_K, some Q6_K, the embedding often Q8_0 or Q6_K).
pub const FILE_TYPES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
];

/// The name of a `general.file_type` value (`None` for unknown ones).
pub fn file_type_name(v: u32) -> Option<&'static str> {
    FILE_TYPES.iter().find(|(k, _)| *k == v).map(|(_, n)| *n)
}

/// The `general.file_type` value of a name such as `q4_k_m` (any case).
pub fn file_type_value(name: &str) -> Option<u32> {
    FILE_TYPES.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)).map(|(k, _)| *k)
}
