//! What the tower benchmarks share: random weights, llama.cpp's mmproj
//! file of a tower, and the image + soft tokens libmtmd compares
//! (tools/reference/mtmd_embeddings.py).

use gemma_core::{DType, Storage};
use gemma_formats::{GgufValue, GgufWriter};
use gemma_model::towers::mmproj::MmprojTensor;

/// Random bf16 values of `shape` (xorshift, ±0.02), from `state`.
pub fn random_bf16(shape: &[usize], state: &std::cell::Cell<u64>) -> Storage {
    let vals = (0..shape.iter().product::<usize>())
        .map(|_| {
            let mut s = state.get();
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            state.set(s);
            half::bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04)
        })
        .collect();
    Storage::BF16(vals)
}

/// The matrices' type of the mmproj file: `MMPROJ_TYPE` (f16, as llama.cpp's
/// converter writes them, or bf16).
pub fn mmproj_type() -> DType {
    match std::env::var("MMPROJ_TYPE").as_deref() {
        Ok("bf16") => DType::BF16,
        _ => DType::F16,
    }
}

/// Write a tower's mmproj file (`export`'s metadata and tensors) to `path`,
/// matrices in `matrices`, the rest f32.
pub fn write_mmproj(path: &std::path::Path, kv: Vec<(String, GgufValue)>, tensors: Vec<MmprojTensor>, matrices: DType) {
    let mut w = GgufWriter::new();
    for (k, v) in kv {
        w.set(&k, v);
    }
    for t in tensors {
        let dtype = if t.matrix { matrices } else { DType::F32 };
        let mut data = Vec::new();
        gemma_quant::quantize(dtype, &t.values, &mut data).expect("quantize");
        w.add_tensor(&t.name, t.dims, dtype, data).expect("tensor");
    }
    w.write(path).expect("write the mmproj file");
    eprintln!("wrote {}", path.display());
}

/// `PREFIX.rgb` (width, height as u32 LE, then the RGB bytes) and
/// `PREFIX.f32` (the soft tokens), when `OUT=PREFIX` is set.
pub fn write_out(img: &gemma_formats::image_file::Rgb8, soft: &[f32]) {
    let Ok(prefix) = std::env::var("OUT") else { return };
    let mut head = Vec::new();
    head.extend_from_slice(&(img.width as u32).to_le_bytes());
    head.extend_from_slice(&(img.height as u32).to_le_bytes());
    head.extend_from_slice(&img.data);
    std::fs::write(format!("{prefix}.rgb"), head).expect("write the image");
    std::fs::write(format!("{prefix}.f32"), soft.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).expect("write the soft tokens");
}

/// A smooth test image of `w × h`.
pub fn test_image(w: usize, h: usize) -> gemma_formats::image_file::Rgb8 {
    gemma_formats::image_file::Rgb8 { width: w, height: h, data: (0..w * h * 3).map(|i| ((i / 3 % w + i / 3 / w * 3 + i % 3 * 70) % 256) as u8).collect() }
}

/// Encode `img` twice with `encode`, printing each round's time (the first
/// round's soft tokens go to [`write_out`]); `width` is the text model's.
pub fn time_rounds(img: &gemma_formats::image_file::Rgb8, width: usize, encode: &dyn Fn() -> Vec<f32>) {
    for round in 0..2 {
        let t = std::time::Instant::now();
        let out = encode();
        if round == 0 {
            write_out(img, &out);
        }
        println!(
            "round {round}: one {}×{} image → {} soft tokens in {:.2}s on {} threads (random weights: speed only)",
            img.width,
            img.height,
            out.len() / width,
            t.elapsed().as_secs_f64(),
            gemma_kernels::pool::global().threads()
        );
    }
}
