//! GOP/s of the prefill product `matmul` (many tokens) and GB/s of the
//! decode product (one token) for the weight types of Q4_K_M Gemma 3 files
//! on their FFN shapes:
//! `cargo run --release -p gemma-kernels --example gemm_bench [TOKENS]`.

use gemma_core::{DType, Matrix, Storage};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    println!("kernel paths: {}", gemma_kernels::kernel_paths());
    for (dtype, out, inp) in [(DType::Q4_K, 10240, 2560), (DType::Q6_K, 2560, 10240), (DType::Q5_0, 6912, 1152), (DType::Q8_0, 2560, 2560)] {
        let vals: Vec<f32> = (0..out * inp).map(|i| ((i * 7919 % 1999) as f32 / 999.5 - 1.0) * 0.05).collect();
        let w = Matrix::new(out, inp, gemma_quant::convert(Storage::F32(vals), dtype).unwrap());
        let x: Vec<f32> = (0..n * inp).map(|i| (i % 89) as f32 / 89.0 - 0.5).collect();
        let mut y = vec![0f32; n * out];
        gemma_kernels::matmul(&x, n, &w, &mut y);
        // The fastest of 7 runs (this machine's speed drifts).
        let s = (0..7)
            .map(|_| {
                let t = Instant::now();
                gemma_kernels::matmul(&x, n, &w, &mut y);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("{dtype:?} [{out}×{inp}] n={n}: {:.1} GOP/s ({:.1} ms)", 2.0 * (n * out * inp) as f64 / s / 1e9, s * 1e3);
        // Decode: one token, the weights streamed once (bytes per second).
        let mut y1 = vec![0f32; out];
        let s1 = (0..20)
            .map(|_| {
                let t = Instant::now();
                gemma_kernels::matmul(&x[..inp], 1, &w, &mut y1);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("{dtype:?} [{out}×{inp}] n=1: {:.1} GB/s ({:.2} ms)", w.storage.bytes() as f64 / s1 / 1e9, s1 * 1e3);
    }
}
