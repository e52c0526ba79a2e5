//! GFLOP/s of `matmul_t` (the input gradient through a frozen weight)
//! against the forward `matmul` on the same shapes, for bf16 and Q8_0
//! weights: `cargo run --release -p gemma-kernels --example matmul_t_bench`.

use gemma_core::{DType, Matrix, Storage};
use std::time::Instant;

fn main() {
    let n = 300;
    for dtype in [DType::BF16, DType::Q8_0, DType::Q5_0, DType::F32] {
        for (out, inp) in [(2048, 640), (640, 2048), (1024, 640)] {
            let vals: Vec<f32> = (0..out * inp).map(|i| ((i * 7919 % 1999) as f32 / 999.5 - 1.0) * 0.1).collect();
            let w = Matrix::new(out, inp, gemma_quant::convert(Storage::F32(vals), dtype).unwrap());
            let dy: Vec<f32> = (0..n * out).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect();
            let x: Vec<f32> = (0..n * inp).map(|i| (i % 89) as f32 / 89.0 - 0.5).collect();
            let (mut dx, mut y) = (vec![0f32; n * inp], vec![0f32; n * out]);
            let flops = 2.0 * (n * out * inp) as f64;
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = Instant::now();
                for _ in 0..5 {
                    f();
                }
                t.elapsed().as_secs_f64() / 5.0
            };
            let tb = time(&mut || gemma_kernels::matmul_t(&dy, n, &w, &mut dx));
            let tf = time(&mut || gemma_kernels::matmul(&x, n, &w, &mut y));
            let ta = time(&mut || gemma_kernels::matmul_f32_acts(&x, n, &w, &mut y));
            println!("{dtype:?} [{out}×{inp}] n={n}: matmul_t {:.1} GFLOP/s, matmul {:.1} GFLOP/s (ratio {:.2}), matmul_f32_acts {:.1} GFLOP/s", flops / tb / 1e9, flops / tf / 1e9, tf / tb, flops / ta / 1e9);
        }
    }
}
