//! Fine-tuning on the real Gemma 3 270M against transformers + PEFT
//! (goldens from tools/reference/real_model_finetune.py, on the GGUF
//! dequantized to f32): the loss and gradient norms of one batch with the
//! base kept quantized (QLoRA) and expanded to f32, and PEFT's logits with
//! our adapter (written by `gemma finetune`) against ours. Skips loudly
//! without the model (scripts/fetch-model.sh); GEMMA_REQUIRE_REAL_MODEL=1
//! makes that a failure.

use gemma::train::backward::{loss_and_grad, Example};
use gemma::train::TrainableLora;
use gemma::{DType, Gemma, LoadOptions, LogitsMode, Numerics};
use gemma_model::Tape;
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/finetune/real-270m")
}

fn load(dtype: Option<DType>, lora: bool) -> Option<Gemma> {
    let path = gemma::hub::default_model_path();
    if !path.is_file() {
        let msg = format!("SKIPPED: real model not found at {} — run scripts/fetch-model.sh", path.display());
        assert!(std::env::var_os("GEMMA_REQUIRE_REAL_MODEL").is_none(), "{msg}");
        eprintln!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
        return None;
    }
    let opts = LoadOptions { dtype, lora: lora.then(dir), ..Default::default() };
    Some(Gemma::load_with(&path, &opts, &mut |_, _| {}).expect("load the real model"))
}

/// Our loss, global gradient norm, per-tensor norms, and the goldens.
type Measured = (f64, f64, Vec<(String, f64)>, Value);

/// What we measure on the golden batch.
fn ours(dtype: Option<DType>) -> Option<Measured> {
    let mut g = load(dtype, false)?;
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("golden.json")).unwrap()).unwrap();
    let batch: Vec<Example> = golden["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(golden["masks"].as_array().unwrap())
        .map(|(s, m)| Example {
            ids: s.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            targets: m.as_array().unwrap().iter().map(|v| v.as_u64() == Some(1)).collect(),
        })
        .collect();
    let mut lora = TrainableLora::load(&dir(), &g.model.config, 0.0).unwrap();
    g.model.numerics = Numerics::Reference;
    g.model.lora = Some(lora.to_adapter());
    let count: usize = batch.iter().map(Example::count).sum();
    let mb = loss_and_grad(&g.model, &mut lora, &batch, 1.0 / count as f32, 0, &mut Tape::default(), true).unwrap();
    let norms: Vec<(String, f64)> =
        lora.tensors(true).into_iter().map(|(n, _, v)| (n, v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt())).collect();
    let total = norms.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
    Some((mb.loss_sum / count as f64, total, norms, golden))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn check(dtype: Option<DType>, loss_tol: f64, norm_tol: f64) {
    let Some((loss, norm, norms, golden)) = ours(dtype) else { return };
    let (wl, wn) = (golden["loss"].as_f64().unwrap(), golden["grad_norm"].as_f64().unwrap());
    let mut by: Vec<(f64, &String)> = norms.iter().map(|(n, v)| (rel(*v, golden["tensor_grad_norms"][n].as_f64().unwrap()), n)).collect();
    by.sort_by(|a, b| b.0.total_cmp(&a.0));
    let worst = by[0].0;
    eprintln!("{dtype:?}: worst tensors {:?}", &by[..3]);
    let (pl, pn) = (golden["pytorch_f32"]["loss"].as_f64().unwrap(), golden["pytorch_f32"]["grad_norm"].as_f64().unwrap());
    eprintln!("(PyTorch's own f32 run: loss rel {:.1e}, grad norm rel {:.1e} from the f64 reference)", rel(pl, golden["loss"].as_f64().unwrap()), rel(pn, golden["grad_norm"].as_f64().unwrap()));
    eprintln!(
        "{dtype:?}: loss {loss:.6} vs transformers-f64 {wl:.6} (rel {:.1e}); grad norm {norm:.5} vs {wn:.5} (rel {:.1e}); worst per-tensor norm rel {worst:.1e} over {} tensors",
        rel(loss, wl),
        rel(norm, wn),
        norms.len()
    );
    assert!(rel(loss, wl) < loss_tol, "loss {loss} vs {wl}");
    assert!(rel(norm, wn) < norm_tol, "grad norm {norm} vs {wn}");
    assert!(worst < norm_tol * 4.0, "a tensor's gradient norm is off by {worst}");
}

/// QLoRA: the base stays Q4_K_M, its rows dequantized on the fly and met
/// with f32 activations; transformers runs the dequantized weights in f32.
#[test]
fn real_model_qlora_loss_and_gradient_norms_match_transformers() {
    check(None, 1e-5, 1e-4);
}

/// The same weights expanded to f32: the same function, to rounding.
#[test]
fn real_model_f32_loss_and_gradient_norms_match_transformers() {
    check(Some(DType::F32), 1e-5, 1e-4);
}

/// PEFT loads the adapter `gemma finetune` wrote unchanged: its logits equal our `--lora` logits.
#[test]
fn peft_loads_our_adapter_with_our_logits() {
    let Some(mut g) = load(Some(DType::F32), true) else { return };
    g.model.numerics = Numerics::Reference;
    let bytes = std::fs::read(dir().join("peft_logits.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |n: &str| st.tensor(n).unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<i64>>();
    let f32s = |n: &str| st.tensor(n).unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>();
    let ids: Vec<u32> = i64s("ids").iter().map(|&v| v as u32).collect();
    let logits = g.model.forward(&ids, &mut g.model.new_cache(), LogitsMode::All).unwrap();
    let vocab = g.model.config.vocab_size;
    let (want_last, top_ids, top_vals) = (f32s("last_logits"), i64s("top_ids"), f32s("top_logits"));
    let last = &logits[(ids.len() - 1) * vocab..];
    let worst_last = last.iter().zip(&want_last).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let mut worst_top = 0f32;
    for t in 0..ids.len() {
        for k in 0..20 {
            let (id, v) = (top_ids[t * 20 + k] as usize, top_vals[t * 20 + k]);
            worst_top = worst_top.max((logits[t * vocab + id] - v).abs());
        }
    }
    // Relative to the size of the logits (f32 sums over 640 and 262144
    // terms in another order: PyTorch's own f32 forward differs from ours
    // by the same amount).
    let scale = want_last.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = worst_last.max(worst_top) / scale;
    eprintln!("PEFT vs gemma --lora logits: last position max |diff| {worst_last:.2e}; top-20 at every position max |diff| {worst_top:.2e}; relative to max |logit| {scale:.1}: {rel:.1e}");
    assert!(rel < 1e-5, "logits differ: {worst_last} / {worst_top} (relative {rel})");
}
