//! Element types and weight storage. Weights keep their checkpoint type in
//! memory (float or quantized blocks); compute is always f32.

use half::{bf16, f16};
use std::sync::Arc;

/// Element type of stored weights: plain floats or ggml-style quantized blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float (overflows on Gemma activations; fine for weights).
    F16,
    /// bfloat16, Gemma's reference precision.
    BF16,
    /// 32 weights: f16 scale + 32 × 4-bit (offset 8).
    Q4_0,
    /// 32 weights: f16 scale, f16 min + 32 × 4-bit.
    Q4_1,
    /// 32 weights: f16 scale + 32 × 5-bit (offset 16).
    Q5_0,
    /// 32 weights: f16 scale, f16 min + 32 × 5-bit.
    Q5_1,
    /// 32 weights: f16 scale + 32 × i8.
    Q8_0,
    /// 256-weight super-block, 2-bit with 4-bit scales and mins.
    Q2_K,
    /// 256-weight super-block, 3-bit with 6-bit scales.
    Q3_K,
    /// 256-weight super-block, 4-bit with 6-bit scales and mins.
    Q4_K,
    /// 256-weight super-block, 5-bit with 6-bit scales and mins.
    Q5_K,
    /// 256-weight super-block, 6-bit with 8-bit scales.
    Q6_K,
}

/// Every dtype, in ggml type-id order of appearance.
pub const ALL_DTYPES: [DType; 13] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

impl DType {
    /// Weights per block (1 for float types).
    pub fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q2_K => 84,
            DType::Q3_K => 110,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
        }
    }

    /// Bytes needed for `n` elements (`n` must be a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }

    /// True for block-quantized types.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// The ggml/GGUF type id.
    pub fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q2_K => 10,
            DType::Q3_K => 11,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::BF16 => 30,
        }
    }

    /// The dtype of a ggml/GGUF type id, if supported.
    pub fn from_ggml_id(id: u32) -> Option<Self> {
        ALL_DTYPES.iter().copied().find(|d| d.ggml_id() == id)
    }

    /// Name as used on the command line and by ggml (`f32`, `q4_k`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q2_K => "q2_k",
            DType::Q3_K => "q3_k",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
        }
    }

    /// Parse a name (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        let l = s.to_ascii_lowercase();
        ALL_DTYPES.iter().copied().find(|d| d.name() == l)
    }

    /// Round an f32 to this float dtype and back (identity for quantized types).
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
            _ => x,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Raw bytes, owned or borrowed from a shared memory map (no copy).
#[derive(Clone)]
pub enum Bytes {
    /// Owned bytes.
    Owned(Vec<u8>),
    /// A range of a memory-mapped file.
    Mapped {
        /// The map, shared by every tensor of the file.
        map: Arc<memmap2::Mmap>,
        /// Start of the range.
        start: usize,
        /// Length of the range.
        len: usize,
    },
}

impl Bytes {
    /// `len` zero bytes in an anonymous memory map: pages that are only read
    /// share the kernel's zero page, so this costs address space, not memory
    /// (the placeholder weights of a model that is described but not loaded).
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        let map = memmap2::MmapOptions::new().len(len.max(1)).map_anon()?.make_read_only()?;
        Ok(Bytes::Mapped { map: Arc::new(map), start: 0, len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Owned(v) => write!(f, "Bytes::Owned({} bytes)", v.len()),
            Bytes::Mapped { len, .. } => write!(f, "Bytes::Mapped({len} bytes)"),
        }
    }
}

/// Typed element storage.
#[derive(Debug, Clone)]
pub enum Storage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// Quantized blocks of `dtype`, or float elements kept as raw
    /// little-endian bytes in a memory map.
    Raw {
        /// Element type of the bytes.
        dtype: DType,
        /// Number of elements.
        len: usize,
        /// The blocks.
        bytes: Bytes,
    },
}

impl Storage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
            Storage::Raw { dtype, .. } => *dtype,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F16(v) => v.len(),
            Storage::BF16(v) => v.len(),
            Storage::Raw { len, .. } => *len,
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.dtype().bytes_for(self.len())
    }
}

/// A row-major weight matrix `[rows, cols]`, as a PyTorch `Linear.weight`
/// (`[out_features, in_features]`). For block types, each row is a whole
/// number of blocks.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Number of rows (output features).
    pub rows: usize,
    /// Number of columns (input features).
    pub cols: usize,
    /// `rows * cols` elements.
    pub storage: Storage,
}

impl Matrix {
    /// Build a matrix; `storage.len()` must equal `rows * cols` and rows
    /// must be whole blocks.
    pub fn new(rows: usize, cols: usize, storage: Storage) -> Self {
        assert_eq!(storage.len(), rows * cols, "matrix storage does not match its shape");
        assert_eq!(cols % storage.dtype().block_size(), 0, "matrix rows are not whole blocks");
        Self { rows, cols, storage }
    }

    /// Element type of the stored weights.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.dtype().bytes_for(self.cols)
    }

    /// The first `n` rows (all of them when `n` is larger): the same mapped
    /// bytes where the matrix is mapped, a copy otherwise.
    pub fn first_rows(&self, n: usize) -> Matrix {
        let (n, cols) = (n.min(self.rows), self.cols);
        let storage = match &self.storage {
            Storage::F32(v) => Storage::F32(v[..n * cols].to_vec()),
            Storage::F16(v) => Storage::F16(v[..n * cols].to_vec()),
            Storage::BF16(v) => Storage::BF16(v[..n * cols].to_vec()),
            Storage::Raw { dtype, bytes, .. } => {
                let len = n * self.row_bytes();
                let bytes = match bytes {
                    Bytes::Mapped { map, start, .. } => Bytes::Mapped { map: Arc::clone(map), start: *start, len },
                    Bytes::Owned(v) => Bytes::Owned(v[..len].to_vec()),
                };
                Storage::Raw { dtype: *dtype, len: n * cols, bytes }
            }
        };
        Matrix { rows: n, cols, storage }
    }

    /// A copy of the rows `ids` (each below `rows`), in that order.
    pub fn rows_of(&self, ids: &[u32]) -> Matrix {
        fn pick<T: Copy>(v: &[T], ids: &[u32], width: usize) -> Vec<T> {
            ids.iter().flat_map(|&i| &v[i as usize * width..(i as usize + 1) * width]).copied().collect()
        }
        let cols = self.cols;
        let storage = match &self.storage {
            Storage::F32(v) => Storage::F32(pick(v, ids, cols)),
            Storage::F16(v) => Storage::F16(pick(v, ids, cols)),
            Storage::BF16(v) => Storage::BF16(pick(v, ids, cols)),
            Storage::Raw { dtype, bytes, .. } => Storage::Raw { dtype: *dtype, len: ids.len() * cols, bytes: Bytes::Owned(pick(bytes.as_slice(), ids, self.row_bytes())) },
        };
        Matrix { rows: ids.len(), cols, storage }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rows_are_the_leading_rows_and_share_a_map() {
        let m = Matrix::new(3, 2, Storage::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert!(matches!(m.first_rows(2).storage, Storage::F32(ref v) if v == &[1.0, 2.0, 3.0, 4.0]));
        assert_eq!(m.first_rows(9).rows, 3);
        // Two Q8_0 rows of 32 columns: 34 bytes each.
        let owned = Matrix::new(2, 32, Storage::Raw { dtype: DType::Q8_0, len: 64, bytes: Bytes::Owned((0..68).collect()) });
        let first = owned.first_rows(1);
        assert_eq!((first.rows, first.storage.len()), (1, 32));
        assert!(matches!(first.storage, Storage::Raw { bytes: Bytes::Owned(ref v), .. } if v[..] == (0..34).collect::<Vec<u8>>()[..]));
        let mapped = Matrix::new(2, 32, Storage::Raw { dtype: DType::Q8_0, len: 64, bytes: Bytes::zeroed(68).unwrap() });
        let Storage::Raw { bytes: Bytes::Mapped { map, len, .. }, .. } = mapped.first_rows(1).storage else { panic!("not mapped") };
        let Storage::Raw { bytes: Bytes::Mapped { map: whole, .. }, .. } = &mapped.storage else { panic!("not mapped") };
        assert!(Arc::ptr_eq(&map, whole) && len == 34);
        let picked = owned.rows_of(&[1, 0, 1]);
        let want: Vec<u8> = (34..68).chain(0..34).chain(34..68).collect();
        assert!(picked.rows == 3 && matches!(picked.storage, Storage::Raw { len: 96, bytes: Bytes::Owned(ref v), .. } if v == &want));
        assert!(matches!(m.rows_of(&[2]).storage, Storage::F32(ref v) if v == &[5.0, 6.0]));
    }
}
