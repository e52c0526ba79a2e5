//! Element types and weight storage. Weights keep their checkpoint dtype in
//! memory; compute is always f32.

use half::{bf16, f16};

/// Element type of stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float (overflows on Gemma activations; fine for weights).
    F16,
    /// bfloat16, Gemma's reference precision.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Lower-case name as used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Round an f32 to this dtype and back (what storing it would do).
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Owned, typed element storage.
#[derive(Debug, Clone)]
pub enum Storage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
}

impl Storage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F16(v) => v.len(),
            Storage::BF16(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy elements `start..start+out.len()` into `out` as f32.
    pub fn read_f32(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Storage::F32(v) => out.copy_from_slice(&v[start..end]),
            Storage::F16(v) => {
                for (o, x) in out.iter_mut().zip(&v[start..end]) {
                    *o = x.to_f32();
                }
            }
            Storage::BF16(v) => {
                for (o, x) in out.iter_mut().zip(&v[start..end]) {
                    *o = x.to_f32();
                }
            }
        }
    }

    /// All elements as f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        self.read_f32(0, &mut out);
        out
    }

    /// Convert to another dtype (rounding to nearest even).
    pub fn convert(self, dtype: DType) -> Storage {
        if self.dtype() == dtype {
            return self;
        }
        let v = self.to_f32_vec();
        match dtype {
            DType::F32 => Storage::F32(v),
            DType::F16 => Storage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Storage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.len() * self.dtype().size()
    }
}

/// A row-major weight matrix `[rows, cols]`, as a PyTorch `Linear.weight`
/// (`[out_features, in_features]`).
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
    /// Build a matrix; `storage.len()` must equal `rows * cols`.
    pub fn new(rows: usize, cols: usize, storage: Storage) -> Self {
        assert_eq!(storage.len(), rows * cols, "matrix storage does not match its shape");
        Self { rows, cols, storage }
    }

    /// Copy row `r` into `out` (`[cols]`) as f32.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        self.storage.read_f32(r * self.cols, &mut out[..self.cols]);
    }

    /// Element type of the stored weights.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
}
