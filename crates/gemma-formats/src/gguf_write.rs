//! GGUF (version 3) writer.

use crate::gguf::{GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use gemma_core::{DType, GemmaError, Result};
use crate::folio_writer::FolioWriter;
use std::io::Write;
use std::path::Path;

/// Writes a tensor's encoded bytes when the file is written (a tensor that
/// is never held whole in memory); it must write exactly the tensor's size.
pub type TensorFill = Box<dyn Fn(&mut dyn Write) -> std::io::Result<()> + Send + Sync>;

/// A tensor's bytes: held, or produced while writing.
enum TensorData {
    Bytes(Vec<u8>),
    Fill(TensorFill),
}

/// A tensor to be written: name, ggml-order dims, type, encoded bytes.
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
    /// Encoded size in bytes.
    len: u64,
    data: TensorData,
}

/// Counts the bytes passed through to `inner`.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Collects metadata and tensors, then writes one GGUF v3 file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// The element type of array key `key` as llama.cpp reads it (GGUF type
/// ids: 8 string, 6 f32, 5 i32), for arrays written empty; u32 otherwise.
fn array_elem_type(key: &str) -> u32 {
    match key {
        "tokenizer.ggml.tokens" | "tokenizer.ggml.merges" => 8,
        "tokenizer.ggml.scores" => 6,
        "tokenizer.ggml.token_type" => 5,
        _ => 4,
    }
}

fn put_value(w: &mut impl Write, v: &GgufValue) -> std::io::Result<()> {
    match v {
        GgufValue::U8(x) => w.write_all(&[*x]),
        GgufValue::I8(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::Bool(x) => w.write_all(&[*x as u8]),
        GgufValue::String(s) => put_str(w, s),
        GgufValue::Array(items) => {
            let elem = items.first().map_or(4, GgufValue::type_id);
            w.write_all(&elem.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|i| put_value(w, i))
        }
        GgufValue::U64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a metadata key (later values replace earlier ones).
    pub fn set(&mut self, key: &str, value: GgufValue) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
    }

    /// Add a tensor: `dims` in ggml order (`dims[0]` = columns), `data`
    /// already encoded as `dtype`.
    pub fn add_tensor(&mut self, name: &str, dims: Vec<u64>, dtype: DType, data: Vec<u8>) -> Result<()> {
        let n: u64 = dims.iter().product();
        if dtype.bytes_for(n as usize) != data.len() {
            return Err(GemmaError::invalid("tensor", format!("`{name}`: {} bytes do not hold {n} {dtype} values", data.len())));
        }
        let len = data.len() as u64;
        self.tensors.push(PendingTensor { name: name.to_string(), dims, dtype, len, data: TensorData::Bytes(data) });
        Ok(())
    }

    /// Add a tensor whose bytes `fill` writes when the file is written
    /// (streaming: memory holds no more than `fill` does).
    pub fn add_tensor_fill(&mut self, name: &str, dims: Vec<u64>, dtype: DType, fill: TensorFill) -> Result<()> {
        let n: u64 = dims.iter().product();
        if !(n as usize).is_multiple_of(dtype.block_size()) {
            return Err(GemmaError::invalid("tensor", format!("`{name}`: {n} values are not whole {dtype} blocks")));
        }
        let len = dtype.bytes_for(n as usize) as u64;
        self.tensors.push(PendingTensor { name: name.to_string(), dims, dtype, len, data: TensorData::Fill(fill) });
        Ok(())
    }

    /// Size of the file `write` would produce, in bytes.
    pub fn file_len(&self) -> u64 {
        let mut head = Vec::new();
        self.header(&mut head).expect("writing to memory cannot fail");
        head.len() as u64 + self.tensors.iter().map(|t| t.len.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT).sum::<u64>()
    }

    /// Write the file, 2 MiB at a time (cached in huge pages: [`FolioWriter`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |e| GemmaError::io(path, e);
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = FolioWriter::new(file);
        self.write_to(&mut w).map_err(io)?;
        w.flush().map_err(io)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("writing to memory cannot fail");
        out
    }

    /// Write the file to any writer.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let align = DEFAULT_ALIGNMENT;
        let mut head = Vec::new();
        self.header(&mut head)?;
        w.write_all(&head)?;
        for t in &self.tensors {
            match &t.data {
                TensorData::Bytes(b) => w.write_all(b)?,
                TensorData::Fill(f) => {
                    let mut c = Counting { inner: w, n: 0 };
                    f(&mut c)?;
                    if c.n != t.len {
                        return Err(std::io::Error::other(format!("tensor `{}`: its fill wrote {} bytes, the tensor has {}", t.name, c.n, t.len)));
                    }
                }
            }
            let pad = t.len.div_ceil(align) * align - t.len;
            w.write_all(&vec![0u8; pad as usize])?;
        }
        Ok(())
    }

    /// The header, tensor directory and padding before the first tensor.
    fn header(&self, head: &mut Vec<u8>) -> std::io::Result<()> {
        let align = DEFAULT_ALIGNMENT;
        head.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(head, k)?;
            head.extend_from_slice(&v.type_id().to_le_bytes());
            match v {
                // An empty array has no element to tell its type: take the
                // type llama.cpp reads the key with (it refuses a u32 array
                // of merges).
                GgufValue::Array(items) if items.is_empty() => {
                    head.extend_from_slice(&array_elem_type(k).to_le_bytes());
                    head.extend_from_slice(&0u64.to_le_bytes());
                }
                _ => put_value(head, v)?,
            }
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(head, &t.name)?;
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.dtype.ggml_id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.len).div_ceil(align) * align;
        }
        head.resize((head.len() as u64).div_ceil(align) as usize * align as usize, 0);
        Ok(())
    }
}

/// A small valid GGUF file with every metadata type and a few tensors
/// (fuzzing seed and test fixture).
pub fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", GgufValue::String("gemma3".into()));
    w.set("u8", GgufValue::U8(7));
    w.set("i8", GgufValue::I8(-7));
    w.set("u16", GgufValue::U16(700));
    w.set("i16", GgufValue::I16(-700));
    w.set("u32", GgufValue::U32(70000));
    w.set("i32", GgufValue::I32(-70000));
    w.set("f32", GgufValue::F32(1.5));
    w.set("bool", GgufValue::Bool(true));
    w.set("str", GgufValue::String("héllo".into()));
    w.set("u64", GgufValue::U64(1 << 40));
    w.set("i64", GgufValue::I64(-(1 << 40)));
    w.set("f64", GgufValue::F64(2.25));
    w.set("arr", GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2)]));
    w.set("nested", GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::String("a".into())]), GgufValue::Array(vec![])]));
    let f: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("a.weight", vec![32, 2], DType::F32, f).expect("valid tensor");
    w.add_tensor("b.weight", vec![32], DType::Q8_0, vec![0u8; 34]).expect("valid tensor");
    w.to_bytes()
}
