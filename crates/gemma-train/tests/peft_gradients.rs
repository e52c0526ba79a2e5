//! Loss and every LoRA gradient of one batch, and the losses of 10 AdamW
//! steps, against PyTorch + PEFT on the tiny Gemma 1/2/3, 3n and Gemma 4
//! (E-style, unified, MoE) checkpoints in f32
//! (goldens from tools/reference/make_finetune_fixtures.py); and the
//! training forward's logits against the inference forward's, bit for bit.

use gemma_formats::SafetensorsSet;
use gemma_model::{hf::load_model, LogitsMode, Model, Tape};
use gemma_train::backward::{loss_and_grad, Example};
use gemma_train::TrainableLora;
use std::path::PathBuf;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn setup(name: &str) -> (Model, TrainableLora, Vec<Example>, SafetensorsSet, serde_json::Value) {
    let model = load_model(&testdata().join(name), None, &mut |_, _| {}).unwrap();
    let dir = testdata().join("finetune").join(name);
    let lora = TrainableLora::load(&dir.join("init"), &model.config, 0.0).unwrap();
    let golden = SafetensorsSet::open_files(&[dir.join("golden.safetensors")]).unwrap();
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| -> Option<Vec<i64>> {
        let t = st.tensor(name).ok()?;
        Some(t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
    };
    let mut batch = Vec::new();
    for i in 0.. {
        let Some(ids) = ints(&format!("ids_{i}")) else { break };
        let mask = ints(&format!("mask_{i}")).unwrap();
        batch.push(Example { ids: ids.iter().map(|&v| v as u32).collect(), targets: mask.iter().map(|&v| v == 1).collect() });
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    (model, lora, batch, golden, json)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn check_gradients(name: &str) {
    let (mut model, mut lora, batch, golden, json) = setup(name);
    model.lora = Some(lora.to_adapter());
    let count: usize = batch.iter().map(Example::count).sum();
    let mb = loss_and_grad(&model, &mut lora, &batch, 1.0 / count as f32, 0, &mut Tape::default(), true).unwrap();
    let loss = mb.loss_sum / count as f64;
    let want = json["loss"].as_f64().unwrap();
    assert!(rel(loss, want) < 1e-5, "{name}: loss {loss} vs PyTorch {want}");
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for (tname, shape, g) in lora.tensors(true) {
        let (wshape, w) = golden.load(&format!("grad.{tname}")).unwrap_or_else(|_| panic!("{name}: no golden for {tname}"));
        assert_eq!(shape, wshape, "{tname}");
        let w = gemma_quant::to_f32_vec(&w);
        // Relative to the tensor's largest gradient (single entries may be ~0).
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let err = (*a as f64 - *b as f64).abs() / scale;
            worst = worst.max(err);
            assert!(err < 1e-4, "{name}: {tname}[{i}] = {a} vs PyTorch {b} (scale {scale})");
        }
        checked += 1;
    }
    assert!(checked > 0);
    eprintln!("{name}: loss {loss:.7} vs {want:.7} (rel {:.1e}); {checked} gradient tensors, worst error {worst:.1e} of each tensor's max", rel(loss, want));
}

#[test]
fn gemma1_loss_and_gradients_equal_peft() {
    check_gradients("tiny-gemma1");
}

#[test]
fn gemma2_loss_and_gradients_equal_peft() {
    check_gradients("tiny-gemma2");
}

#[test]
fn gemma3_loss_and_gradients_equal_peft() {
    check_gradients("tiny-gemma3");
}

/// E-style Gemma 4: per-layer inputs, KV sharing, double-wide MLP, partial
/// RoPE, value norm, layer scale, two head geometries.
#[test]
fn gemma4_loss_and_gradients_equal_peft() {
    check_gradients("tiny-gemma4");
}

/// Unified Gemma 4: `attention_k_eq_v` global layers with their own head geometry.
#[test]
fn gemma4_unified_loss_and_gradients_equal_peft() {
    check_gradients("tiny-gemma4-unified");
}

/// Gemma 3n: AltUp predict/correct and the final collapse, LAuReL, the
/// sparse gate, per-layer inputs into the streams, KV sharing.
#[test]
fn gemma3n_loss_and_gradients_equal_peft() {
    check_gradients("tiny-gemma3n");
}

/// Gemma 4 MoE: LoRA on attention and the dense MLP (PEFT's default: the
/// experts are parameters, not modules), the gradient through the frozen
/// experts and the router.
#[test]
fn gemma4_moe_loss_and_gradients_equal_peft() {
    check_gradients("tiny-gemma4-moe");
}

/// The training forward runs the inference forward's steps: same logits, bit for bit.
#[test]
fn training_forward_logits_equal_inference_bit_for_bit() {
    for name in ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma4", "tiny-gemma4-unified", "tiny-gemma4-moe", "tiny-gemma3n"] {
        let (mut model, lora, batch, _, _) = setup(name);
        model.lora = Some(lora.to_adapter());
        let seqs: Vec<&[u32]> = batch.iter().map(|e| &e.ids[..]).collect();
        let mut tape = Tape::default();
        model.forward_train(&seqs, &mut tape, model.lora.as_ref()).unwrap();
        let cfg = &model.config;
        for (e, &(r0, len)) in batch.iter().zip(&tape.seqs) {
            let want = model.forward(&e.ids, &mut model.new_cache(), LogitsMode::All).unwrap();
            let mut h = vec![0f32; len * cfg.hidden_size];
            gemma_kernels::rms_norm(&tape.x_out[r0 * cfg.hidden_size..(r0 + len) * cfg.hidden_size], &model.weights.final_norm, cfg.rms_norm_eps, &mut h);
            let mut got = vec![0f32; len * cfg.vocab_size];
            gemma_kernels::matmul(&h, len, model.weights.head(), &mut got);
            if let Some(c) = cfg.final_softcap {
                gemma_kernels::softcap(&mut got, c);
            }
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: training logits differ from inference");
        }
    }
}

/// bf16 weights (converted at load): the training forward still equals
/// inference bit for bit (both multiply bf16 weights with bf16-rounded
/// activations on AMX-BF16, f32 ones elsewhere), and the loss and
/// gradients stay within bf16 rounding of PyTorch's f32 ones, through the
/// bf16 forward and input-gradient products.
#[test]
fn bf16_weights_train_within_bf16_rounding_of_f32() {
    for name in ["tiny-gemma3", "tiny-gemma4", "tiny-gemma4-moe"] {
        let (_, mut lora, batch, golden, json) = setup(name);
        let mut model = load_model(&testdata().join(name), Some(gemma_core::DType::BF16), &mut |_, _| {}).unwrap();
        model.lora = Some(lora.to_adapter());
        let seqs: Vec<&[u32]> = batch.iter().map(|e| &e.ids[..]).collect();
        let mut tape = Tape::default();
        model.forward_train(&seqs, &mut tape, model.lora.as_ref()).unwrap();
        let hs = model.config.hidden_size;
        for (e, &(r0, len)) in batch.iter().zip(&tape.seqs) {
            let want = model.forward(&e.ids, &mut model.new_cache(), LogitsMode::All).unwrap();
            let mut h = vec![0f32; len * hs];
            gemma_kernels::rms_norm(&tape.x_out[r0 * hs..(r0 + len) * hs], &model.weights.final_norm, model.config.rms_norm_eps, &mut h);
            let mut got = vec![0f32; len * model.config.vocab_size];
            gemma_kernels::matmul(&h, len, model.weights.head(), &mut got);
            if let Some(c) = model.config.final_softcap {
                gemma_kernels::softcap(&mut got, c);
            }
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} bf16: training logits differ from inference");
        }
        let count: usize = batch.iter().map(Example::count).sum();
        let mb = loss_and_grad(&model, &mut lora, &batch, 1.0 / count as f32, 0, &mut Tape::default(), true).unwrap();
        let loss = mb.loss_sum / count as f64;
        let want = json["loss"].as_f64().unwrap();
        // All LoRA gradients as one vector: ‖g − g_f32‖ / ‖g_f32‖. These
        // tiny random models are sensitive: the bf16 weights alone (f32
        // activations) move it by 1.1e-2 / 8.5e-2 / 3.3e-2 (gemma3, gemma4,
        // MoE), rounding the activations too by 1.7e-2 / 1.4e-1 / 5e-2, and
        // the gradient's rounding in the backward product by 4e-3 of that
        // (measured with AMX off, on, and on for the forward only). The
        // bound catches a wrong product (a mis-packed or transposed one is
        // off by ~1); the kernel tests check the rounding itself.
        let (mut diff, mut norm) = (0f64, 0f64);
        for (tname, _, g) in lora.tensors(true) {
            let (_, w) = golden.load(&format!("grad.{tname}")).unwrap();
            let w = gemma_quant::to_f32_vec(&w);
            diff += g.iter().zip(&w).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>();
            norm += w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>();
        }
        let gerr = (diff / norm).sqrt();
        eprintln!("{name} bf16: loss {:.1e} relative to PyTorch f32, gradient {gerr:.1e} relative", rel(loss, want));
        assert!(rel(loss, want) < 5e-3, "{name} bf16: loss {loss} vs PyTorch f32 {want}");
        assert!(gerr < 0.25, "{name} bf16: the gradient is {gerr} relative away from PyTorch f32");
    }
}

/// Ten AdamW steps (weight decay, warmup + linear decay, clipping at 1.0)
/// on the same batch: every step's loss and gradient norm as PyTorch's.
#[test]
fn ten_adamw_steps_follow_pytorch() {
    use gemma_train::optim::{clip_grad_norm, AdamState, AdamW, Schedule};
    for name in ["tiny-gemma1", "tiny-gemma2", "tiny-gemma3", "tiny-gemma4", "tiny-gemma4-unified", "tiny-gemma4-moe", "tiny-gemma3n"] {
        let (mut model, mut lora, batch, _, json) = setup(name);
        let count: usize = batch.iter().map(Example::count).sum();
        let opt = AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        let mut state = AdamState::new(&lora);
        let (mut worst, mut worst_norm): (f64, f64) = (0.0, 0.0);
        for (step, want) in json["steps"].as_array().unwrap().iter().enumerate() {
            model.lora = Some(lora.to_adapter());
            lora.zero_grad();
            let mb = loss_and_grad(&model, &mut lora, &batch, 1.0 / count as f32, 0, &mut Tape::default(), true).unwrap();
            let loss = mb.loss_sum / count as f64;
            let norm = clip_grad_norm(&mut lora, 1.0);
            let lr = 5e-3 * Schedule::Linear.factor(step, 3, 10);
            assert!(rel(lr, want["lr"].as_f64().unwrap()) < 1e-9 || lr == 0.0, "{name} step {step}: lr {lr}");
            let (wl, wn) = (want["loss"].as_f64().unwrap(), want["grad_norm"].as_f64().unwrap());
            assert!(rel(loss, wl) < 1e-4, "{name} step {step}: loss {loss} vs PyTorch {wl}");
            // Gemma 3n's sparse gate cuts at mean + k·std of each row: an
            // element within rounding of the cutoff may count on one side
            // here and on the other in PyTorch, which moves that step's
            // gradient norm by up to ~3e-3 (measured: one step of ten) while
            // the loss trajectory stays within 1e-5.
            let norm_tol = if name == "tiny-gemma3n" { 5e-3 } else { 1e-4 };
            assert!(rel(norm, wn) < norm_tol, "{name} step {step}: grad norm {norm} vs PyTorch {wn}");
            worst_norm = worst_norm.max(rel(norm, wn));
            worst = worst.max(rel(loss, wl));
            opt.step(&mut lora, &mut state, lr);
        }
        eprintln!("{name}: 10 AdamW steps, worst loss difference {worst:.1e} relative, gradient norm {worst_norm:.1e}");
    }
}

/// Gradient checkpointing recomputes each block exactly: the same loss and
/// gradients bit for bit, LoRA dropout masks included.
#[test]
fn gradient_checkpointing_gives_the_same_gradients_bit_for_bit() {
    // Gemma 4 E-style and 3n: per-layer inputs, KV sharing (the source
    // layers keep their keys and values), AltUp streams; the MoE's experts.
    for name in ["tiny-gemma2", "tiny-gemma3", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma3n"] {
        let (mut model, lora, batch, _, _) = setup(name);
        model.lora = Some(lora.to_adapter());
        let run = |ckpt: bool| {
            let mut l = lora.clone();
            l.spec.dropout = 0.2;
            let mut tape = Tape { checkpointing: ckpt, ..Tape::default() };
            let mb = loss_and_grad(&model, &mut l, &batch, 0.1, 99, &mut tape, true).unwrap();
            (mb.loss_sum, l.tensors(true).into_iter().flat_map(|t| t.2.to_vec()).collect::<Vec<f32>>())
        };
        let (a, b) = (run(false), run(true));
        assert_eq!(a.0.to_bits(), b.0.to_bits(), "{name}: loss");
        assert!(a.1.iter().zip(&b.1).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: gradients differ with checkpointing");
        assert!(a.1.iter().any(|&g| g != 0.0));
    }
}
