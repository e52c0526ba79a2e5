//! Block layouts of ggml's weight types (bit-compatible with GGUF files),
//! with scalar reference dequantize, quantize and dot for each.
//!
//! Layouts, per block (all little-endian, `d`/`m` are f16):
//! - Q4_0 `{d, qs[16]}`, Q4_1 `{d, m, qs[16]}`, Q5_0 `{d, qh[4], qs[16]}`,
//!   Q5_1 `{d, m, qh[4], qs[16]}`, Q8_0 `{d, qs[32] as i8}` — 32 weights;
//! - Q2_K `{scales[16], qs[64], d, dmin}`, Q3_K `{hmask[32], qs[64], scales[12], d}`,
//!   Q4_K `{d, dmin, scales[12], qs[128]}`, Q5_K `{d, dmin, scales[12], qh[32], qs[128]}`,
//!   Q6_K `{ql[128], qh[64], scales[16] as i8, d}` — 256 weights.

pub mod act;
mod kquants;
mod legacy;
pub mod levels;

use gemma_core::{DType, GemmaError, Result, Storage};
use half::{bf16, f16};

const _: () = assert!(std::mem::size_of::<f16>() == 2);

/// Read the f16 at `b[i..i+2]`.
#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Write `x` as f16 at `b[i..i+2]`.
#[inline]
pub(crate) fn put_f16(b: &mut [u8], i: usize, x: f32) {
    b[i..i + 2].copy_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
}

/// Dequantize whole blocks of `dtype` from `src` into `out`
/// (`out.len()` elements, a multiple of the block size).
pub fn dequantize(dtype: DType, src: &[u8], out: &mut [f32]) {
    let bs = dtype.block_size();
    let bb = dtype.block_bytes();
    debug_assert_eq!(out.len() % bs, 0);
    debug_assert!(src.len() >= out.len() / bs * bb);
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        _ => {
            for (blk, o) in src.chunks_exact(bb).zip(out.chunks_exact_mut(bs)) {
                dequantize_block(dtype, blk, o);
            }
        }
    }
}

/// Dequantize one block (`blk.len() == block_bytes`, `out.len() == block_size`).
#[inline]
pub fn dequantize_block(dtype: DType, blk: &[u8], out: &mut [f32]) {
    match dtype {
        DType::Q4_0 => legacy::dequant_q4_0(blk, out),
        DType::Q4_1 => legacy::dequant_q4_1(blk, out),
        DType::Q5_0 => legacy::dequant_q5_0(blk, out),
        DType::Q5_1 => legacy::dequant_q5_1(blk, out),
        DType::Q8_0 => legacy::dequant_q8_0(blk, out),
        DType::Q2_K => kquants::dequant_q2_k(blk, out),
        DType::Q3_K => kquants::dequant_q3_k(blk, out),
        DType::Q4_K => kquants::dequant_q4_k(blk, out),
        DType::Q5_K => kquants::dequant_q5_k(blk, out),
        DType::Q6_K => kquants::dequant_q6_k(blk, out),
        DType::F32 | DType::F16 | DType::BF16 => dequantize(dtype, blk, out),
    }
}

/// Quantize `x` (a multiple of the block size) to `dtype`, appending the
/// blocks to `out`.
pub fn quantize(dtype: DType, x: &[f32], out: &mut Vec<u8>) -> Result<()> {
    let bs = dtype.block_size();
    if !x.len().is_multiple_of(bs) {
        return Err(GemmaError::invalid("quantize", format!("{} values are not a whole number of {dtype} blocks of {bs}", x.len())));
    }
    let start = out.len();
    out.resize(start + dtype.bytes_for(x.len()), 0);
    let dst = &mut out[start..];
    match dtype {
        DType::F32 => dst.chunks_exact_mut(4).zip(x).for_each(|(d, v)| d.copy_from_slice(&v.to_le_bytes())),
        DType::F16 => dst.chunks_exact_mut(2).zip(x).for_each(|(d, v)| d.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes())),
        DType::BF16 => dst.chunks_exact_mut(2).zip(x).for_each(|(d, v)| d.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes())),
        _ => {
            let bb = dtype.block_bytes();
            for (xb, d) in x.chunks_exact(bs).zip(dst.chunks_exact_mut(bb)) {
                match dtype {
                    DType::Q4_0 => legacy::quant_q4_0(xb, d),
                    DType::Q4_1 => legacy::quant_q4_1(xb, d),
                    DType::Q5_0 => legacy::quant_q5_0(xb, d),
                    DType::Q5_1 => legacy::quant_q5_1(xb, d),
                    DType::Q8_0 => legacy::quant_q8_0(xb, d),
                    DType::Q2_K => kquants::quant_q2_k(xb, d),
                    DType::Q3_K => kquants::quant_q3_k(xb, d),
                    DType::Q4_K => kquants::quant_q4_k(xb, d),
                    DType::Q5_K => kquants::quant_q5_k(xb, d),
                    DType::Q6_K => kquants::quant_q6_k(xb, d),
                    _ => unreachable!("float types handled above"),
                }
            }
        }
    }
    Ok(())
}

/// Reference dot product of a row of blocks with f32 activations.
pub fn dot_ref(dtype: DType, row: &[u8], x: &[f32]) -> f32 {
    let mut w = vec![0f32; x.len()];
    dequantize(dtype, row, &mut w);
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// Elements `start..start+out.len()` of a storage as f32 (`start` and the
/// length must fall on block boundaries for quantized types).
pub fn read_f32(s: &Storage, start: usize, out: &mut [f32]) {
    let end = start + out.len();
    match s {
        Storage::F32(v) => out.copy_from_slice(&v[start..end]),
        Storage::F16(v) => out.iter_mut().zip(&v[start..end]).for_each(|(o, x)| *o = x.to_f32()),
        Storage::BF16(v) => out.iter_mut().zip(&v[start..end]).for_each(|(o, x)| *o = x.to_f32()),
        Storage::Raw { dtype, bytes, .. } => {
            let bs = dtype.block_size();
            let b0 = start / bs * dtype.block_bytes();
            dequantize(*dtype, &bytes.as_slice()[b0..b0 + dtype.bytes_for(out.len())], out);
        }
    }
}

/// The whole storage as f32.
pub fn to_f32_vec(s: &Storage) -> Vec<f32> {
    let mut v = vec![0.0; s.len()];
    read_f32(s, 0, &mut v);
    v
}

/// A type whose blocks divide `cols`: `t` itself, else llama.cpp's fallback
/// for it (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, Q2_K/Q3_K→Q4_0), else F16.
pub fn fallback(t: DType, cols: usize) -> DType {
    if cols.is_multiple_of(t.block_size()) {
        return t;
    }
    let alt = match t {
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        DType::Q2_K | DType::Q3_K => DType::Q4_0,
        _ => DType::F16,
    };
    if cols.is_multiple_of(alt.block_size()) {
        alt
    } else {
        DType::F16
    }
}

/// Convert storage to `dtype` (dequantize, then quantize when needed).
/// Float targets become typed vectors; quantized targets become owned blocks.
pub fn convert(s: Storage, dtype: DType) -> Result<Storage> {
    if s.dtype() == dtype && !matches!(s, Storage::Raw { dtype: DType::F32 | DType::F16 | DType::BF16, .. }) {
        return Ok(s);
    }
    if !dtype.is_quantized() {
        let v = to_f32_vec(&s);
        return Ok(match dtype {
            DType::F16 => Storage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Storage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            _ => Storage::F32(v),
        });
    }
    // Quantized targets: through f32 a chunk at a time, so converting a
    // large matrix (Gemma's embedding is 170M values) needs no f32 copy of
    // all of it. Chunks are whole 256-blocks, which every block size divides.
    let len = s.len();
    if !len.is_multiple_of(dtype.block_size()) {
        return Err(GemmaError::invalid("dtype", format!("{len} values are not a whole number of {dtype} blocks")));
    }
    // Each thread converts a contiguous run of chunks into its own bytes.
    const CHUNK: usize = 256 * 1024;
    let chunks = len.div_ceil(CHUNK);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunks).max(1);
    let per = chunks.div_ceil(threads);
    let convert_run = |c0: usize| -> Result<Vec<u8>> {
        let (from, to) = ((c0 * CHUNK).min(len), ((c0 + per) * CHUNK).min(len));
        let mut out = Vec::with_capacity(dtype.bytes_for(to - from));
        let mut buf = vec![0f32; CHUNK.min(to - from)];
        for start in (from..to).step_by(CHUNK) {
            let part = &mut buf[..CHUNK.min(to - start)];
            read_f32(&s, start, part);
            quantize(dtype, part, &mut out)?;
        }
        Ok(out)
    };
    let runs: Vec<Result<Vec<u8>>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads).map(|t| sc.spawn(move || convert_run(t * per))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(GemmaError::invalid("dtype", "a conversion thread panicked")))).collect()
    });
    let mut out = Vec::with_capacity(dtype.bytes_for(len));
    for run in runs {
        out.extend_from_slice(&run?);
    }
    Ok(Storage::Raw { dtype, len, bytes: gemma_core::tensor::Bytes::Owned(out) })
}

/// Normalized mean squared error `sum((a-b)^2) / sum(b^2)`.
pub fn nmse(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    num / den.max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::tensor::ALL_DTYPES;

    fn signal(n: usize) -> Vec<f32> {
        let mut s = 12345u32;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let u = s as f32 / u32::MAX as f32 - 0.5;
                u * (1.0 + (i % 7) as f32) * 0.1
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_small_for_every_type() {
        let x = signal(1024);
        for dt in ALL_DTYPES {
            let mut q = Vec::new();
            quantize(dt, &x, &mut q).unwrap();
            assert_eq!(q.len(), dt.bytes_for(x.len()), "{dt}");
            let mut y = vec![0.0; x.len()];
            dequantize(dt, &q, &mut y);
            let e = nmse(&y, &x);
            let bound = match dt {
                DType::F32 => 0.0,
                DType::F16 | DType::BF16 => 1e-4,
                DType::Q8_0 => 1e-4,
                DType::Q6_K => 2e-3,
                DType::Q5_0 | DType::Q5_1 | DType::Q5_K => 5e-3,
                DType::Q4_0 | DType::Q4_1 | DType::Q4_K => 2e-2,
                DType::Q3_K => 8e-2,
                DType::Q2_K => 0.25,
            };
            assert!(e <= bound, "{dt}: nmse {e} > {bound}");
            let d = dot_ref(dt, &q, &x);
            let want: f32 = y.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!((d - want).abs() < 1e-3, "{dt}");
        }
    }

    #[test]
    fn partial_blocks_are_rejected() {
        assert!(quantize(DType::Q4_K, &[0.0; 100], &mut Vec::new()).is_err());
    }
}
