//! Dequantization of every block type, and quantization of the 32-weight
//! types, bit-compatible with ggml (goldens from the `gguf` package,
//! tools/reference/make_quant_goldens.py).

use gemma_core::DType;
use gemma_formats::SafetensorsSet;
use std::path::PathBuf;

fn goldens() -> SafetensorsSet {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/quant_goldens.safetensors");
    SafetensorsSet::open_files(&[p]).unwrap()
}

fn f32s(g: &SafetensorsSet, name: &str) -> Vec<f32> {
    g.load_bytes(name).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

const QUANT_TYPES: [DType; 10] =
    [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K];

#[test]
fn dequantize_matches_ggml_for_every_type() {
    let g = goldens();
    for dt in QUANT_TYPES {
        let blocks = g.load_bytes(&format!("{dt}.blocks")).unwrap();
        let want = f32s(&g, &format!("{dt}.values"));
        assert_eq!(blocks.len() / dt.block_bytes() * dt.block_size(), want.len(), "{dt}");
        let mut got = vec![0f32; want.len()];
        gemma_quant::dequantize(dt, &blocks, &mut got);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{dt}[{i}]: {a} vs {b}");
        }
        // The dot reference agrees with the dequantized values.
        let x: Vec<f32> = (0..dt.block_size()).map(|i| (i as f32 * 0.37).sin()).collect();
        let d = gemma_quant::dot_ref(dt, &blocks[..dt.block_bytes()], &x);
        let w: f32 = want[..dt.block_size()].iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!((d - w).abs() < 1e-4 * w.abs().max(1.0), "{dt}: dot {d} vs {w}");
    }
}

#[test]
fn quantize_matches_ggml_for_32_weight_types() {
    let g = goldens();
    let mut checked = 0;
    for dt in QUANT_TYPES {
        let Some(_) = g.info(&format!("{dt}.input")) else { continue };
        let x = f32s(&g, &format!("{dt}.input"));
        let want = g.load_bytes(&format!("{dt}.quantized")).unwrap();
        let mut got = Vec::new();
        gemma_quant::quantize(dt, &x, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{dt}");
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        // Rounding ties can differ in the last bit of a handful of values.
        assert!(differing * 200 <= want.len(), "{dt}: {differing} of {} bytes differ", want.len());
        checked += 1;
    }
    assert_eq!(checked, 5);
}
