//! The LoRA gradients of the Gemma 4 models (E-style: per-layer inputs, KV
//! sharing, double-wide MLP, partial RoPE, value norm, layer scale; unified:
//! `attention_k_eq_v`, two head geometries; MoE: the router and the frozen
//! experts beside the dense MLP) and Gemma 3n (AltUp, LAuReL, per-layer
//! inputs into the streams) against finite differences of the loss itself,
//! projection by projection, in f32 (no PyTorch needed; `peft_gradients.rs`
//! holds the PEFT comparison).

use gemma_model::{hf::load_model, Model, Tape};
use gemma_train::backward::{loss_and_grad, Example};
use gemma_train::{LoraSpec, TrainableLora};
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn batch() -> Vec<Example> {
    [(11usize, 1usize), (16, 5), (7, 1)]
        .iter()
        .enumerate()
        .map(|(s, &(n, first))| {
            let ids = (0..n).map(|i| if i == 0 { 2 } else { 3 + ((i * 97 + s * 31) % 400) as u32 }).collect();
            Example { ids, targets: (0..n).map(|i| i >= first).collect() }
        })
        .collect()
}

fn lcg(k: &mut u64) -> f32 {
    *k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*k >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn adapter(model: &Model) -> TrainableLora {
    let spec = LoraSpec { rank: 4, alpha: 8.0, rslora: false, targets: [true; 7], dropout: 0.0 };
    let mut lora = TrainableLora::init(&model.config, spec, 3).unwrap();
    let mut k = 9;
    for p in lora.layers.iter_mut().flatten().flatten() {
        p.b.iter_mut().for_each(|b| *b = lcg(&mut k) * 0.3);
    }
    lora
}

fn loss(model: &mut Model, lora: &mut TrainableLora, batch: &[Example]) -> f64 {
    model.lora = Some(lora.to_adapter());
    let count: usize = batch.iter().map(Example::count).sum();
    loss_and_grad(model, lora, batch, 1.0 / count as f32, 0, &mut Tape::default(), false).unwrap().loss_sum / count as f64
}

#[test]
fn gemma4_and_gemma3n_lora_gradients_match_finite_differences() {
    // Gemma 3 is the control: its backward equals PEFT's (peft_gradients.rs).
    for name in ["tiny-gemma4", "tiny-gemma4-unified", "tiny-gemma4-moe", "tiny-gemma3n", "tiny-gemma3"] {
        let mut model = load_model(&testdata(name), None, &mut |_, _| {}).unwrap();
        let mut lora = adapter(&model);
        let batch = batch();
        let count: usize = batch.iter().map(Example::count).sum();
        model.lora = Some(lora.to_adapter());
        lora.zero_grad();
        loss_and_grad(&model, &mut lora, &batch, 1.0 / count as f32, 0, &mut Tape::default(), true).unwrap();
        let grads = lora.clone();
        for slot in 0..7 {
            // Gemma 3n's sparse gate is a ReLU at a data-dependent cutoff:
            // finite differences of the gate projection cross its kinks and
            // do not converge (0.286, 0.238, 0.255 at h = 1e-3, 2e-4, 5e-5);
            // PEFT's autograd checks that slot (peft_gradients.rs).
            if name == "tiny-gemma3n" && slot == 4 {
                continue;
            }
            // A random direction over this projection's A and B in every layer.
            let mut k = 77 + slot as u64;
            let mut dir = lora.clone();
            let mut analytic = 0f64;
            let mut any = false;
            for (layer, g) in dir.layers.iter_mut().zip(&grads.layers) {
                if let (Some(p), Some(g)) = (&mut layer[slot], &g[slot]) {
                    any = true;
                    for (d, gv) in p.a.iter_mut().zip(&g.ga).chain(p.b.iter_mut().zip(&g.gb)) {
                        *d = lcg(&mut k);
                        analytic += *d as f64 * *gv as f64;
                    }
                }
            }
            assert!(any, "{name}: no layer has projection {slot}");
            // Central differences at h and h/2, extrapolated (Richardson):
            // Gemma 4's unscaled attention scores curve sharply, so a plain
            // central difference carries an h² error well above f32 noise.
            let h = 1e-3f32;
            let shifted = |step: f32| {
                let mut l = lora.clone();
                for (layer, d) in l.layers.iter_mut().zip(&dir.layers) {
                    if let (Some(p), Some(d)) = (&mut layer[slot], &d[slot]) {
                        p.a.iter_mut().zip(&d.a).chain(p.b.iter_mut().zip(&d.b)).for_each(|(v, dv)| *v += step * dv);
                    }
                }
                l
            };
            let mut central = |h: f32| {
                let (mut up, mut down) = (shifted(h), shifted(-h));
                (loss(&mut model, &mut up, &batch) - loss(&mut model, &mut down, &batch)) / (2.0 * h as f64)
            };
            let (d1, d2) = (central(h), central(h / 2.0));
            let numeric = (4.0 * d2 - d1) / 3.0;
            let err = (numeric - analytic).abs() / analytic.abs().max(1e-3);
            eprintln!("{name} projection {slot}: analytic {analytic:.6} numeric {numeric:.6} (rel {err:.1e})");
            assert!(err < 1e-2, "{name}: projection {slot}: analytic {analytic} vs finite differences {numeric}");
        }
    }
}
