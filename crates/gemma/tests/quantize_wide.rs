//! Quantizing Gemma 3n and Gemma 4 tensors for real: the tiny fixtures are
//! 48 wide, so nearly every matrix falls back to f16 there. These models
//! take the tiny fixtures' configs (AltUp, LAuReL, per-layer embeddings, KV
//! sharing, double-wide MLP, `attention_k_eq_v`, experts) at widths that are
//! multiples of 256, build a random f32 checkpoint from the tensor table
//! (every tensor the loader reads, named as Hugging Face names it), then
//! quantize it to q8_0, q6_k and q4_k_m and check that each matrix got the
//! mix's type (experts included, no f16 fallback), that each tensor's round
//! trip error is what its type's step implies, and print what the round trip
//! costs the logits (relative RMS error and perplexity ratio against the f32
//! GGUF, which runs the same llama.cpp numerics) per model and type.

use gemma::quantize::{quantize_to_gguf, QuantPlan};
use gemma::{Gemma, GemmaConfig, LogitsMode};
use gemma_model::tensors::{walk, Form};
use gemma_model::weights::Naming;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

/// The fixture's config at quantizable widths.
fn wide_config(name: &str) -> Value {
    let text = std::fs::read_to_string(testdata(name).join("config.json")).unwrap();
    let mut c: Value = serde_json::from_str(&text).unwrap();
    c["hidden_size"] = json!(256);
    c["head_dim"] = json!(64);
    c["intermediate_size"] = match &c["intermediate_size"] {
        Value::Array(a) => json!(vec![512; a.len()]),
        _ => json!(512),
    };
    if c.get("moe_intermediate_size").is_some_and(|v| !v.is_null()) {
        c["moe_intermediate_size"] = json!(256);
    }
    if c.get("hidden_size_per_layer_input").and_then(Value::as_u64).is_some_and(|p| p > 0) {
        c["hidden_size_per_layer_input"] = json!(256);
    }
    if c.get("laurel_rank").is_some() {
        c["laurel_rank"] = json!(64);
    }
    if let Some(Value::Object(plc)) = c.get_mut("per_layer_config") {
        for v in plc.values_mut() {
            v["head_dim"] = json!(128);
        }
    }
    c
}

/// A tiny deterministic generator: uniform in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A random f32 Hugging Face checkpoint of `cfg` in `dir` (the fixture's tokenizer copied).
fn write_random_checkpoint(fixture: &str, cfg_json: &Value, dir: &Path) -> GemmaConfig {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(cfg_json).unwrap()).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(testdata(fixture).join(f), dir.join(f)).unwrap();
    }
    let cfg = GemmaConfig::from_json(cfg_json).unwrap();
    let naming = Naming::HuggingFace { prefix: "model." };
    let mut rng = Lcg(42);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    walk(&cfg, &mut |s, l| {
        let shape = (s.shape)(&cfg, l).unwrap();
        let mut values = |n: usize, f: &mut dyn FnMut(&mut Lcg) -> f32| (0..n).flat_map(|_| f(&mut rng).to_le_bytes()).collect::<Vec<u8>>();
        let cols = *shape.last().unwrap();
        // Weights of about 1/√cols keep the activations of order 1 through the layers.
        let bound = (3.0 / cols as f32).sqrt();
        match s.form {
            Form::Streams => {
                for i in 0..shape[0] {
                    let data = values(shape[1] * shape[2], &mut |r| r.next() * bound);
                    tensors.push((naming.name(s.part, i, cfg.sandwich_norms), shape[1..].to_vec(), data));
                }
            }
            Form::Matrix | Form::Stack => {
                let data = values(shape.iter().product(), &mut |r| r.next() * bound);
                tensors.push((naming.name(s.part, l, cfg.sandwich_norms), shape, data));
            }
            // Gains near 1 (these generations store the gain itself), small AltUp coefficients.
            Form::Norm | Form::Vector => {
                let small = shape.len() == 2;
                let data = values(shape.iter().product(), &mut |r| if small { r.next() * 0.1 } else { 1.0 + r.next() * 0.1 });
                tensors.push((naming.name(s.part, l, cfg.sandwich_norms), shape, data));
            }
        }
    });
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    cfg
}

/// Mean negative log-likelihood of each next id under `logits` `[n, vocab]`.
fn nll(logits: &[f32], ids: &[u32], vocab: usize) -> f64 {
    let mut sum = 0.0;
    for (i, row) in logits.chunks_exact(vocab).take(ids.len() - 1).enumerate() {
        let max = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let lse = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
        sum += lse - row[ids[i + 1] as usize] as f64;
    }
    sum / (ids.len() - 1) as f64
}

/// `‖a − b‖ / ‖b‖`.
fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / b.iter().map(|&y| (y as f64).powi(2)).sum::<f64>()).sqrt()
}

#[test]
fn gemma3n_and_gemma4_tensors_quantize_at_real_widths() {
    let ids: Vec<u32> = std::iter::once(2).chain((0..47).map(|i| 3 + (i * 53) % 410)).collect();
    let mut table = String::from("model | type | matrices quantized / all | worst round-trip error per type | logits rel. RMS error | perplexity ratio\n");
    for fixture in ["tiny-gemma3n", "tiny-gemma4", "tiny-gemma4-moe", "tiny-gemma4-unified"] {
        let tmp = tempfile::tempdir().unwrap();
        let hf = tmp.path().join("hf");
        let cfg = write_random_checkpoint(fixture, &wide_config(fixture), &hf);
        // The reference is the f32 GGUF: the same llama.cpp numerics (8-bit
        // activations, f16 KV cache) as the quantized files, so only the
        // weights' rounding differs.
        let f32_gguf = tmp.path().join("f32.gguf");
        quantize_to_gguf(&hf, &QuantPlan::parse("f32").unwrap(), &f32_gguf, &mut |_, _| {}).unwrap();
        let reference = Gemma::load(&f32_gguf).unwrap();
        let vocab = cfg.vocab_size;
        let want = reference.model.forward(&ids, &mut reference.model.new_cache(), LogitsMode::All).unwrap();
        let want_nll = nll(&want, &ids, vocab);
        let exact = Gemma::load(&hf).unwrap();
        let exact = exact.model.forward(&ids, &mut exact.model.new_cache(), LogitsMode::All).unwrap();
        table.push_str(&format!("{fixture} | f32 GGUF vs f32 safetensors (numerics only) | | | {:.4} | {:.4}\n", rel_rms(&want, &exact), (want_nll - nll(&exact, &ids, vocab)).exp()));
        for ty in ["q8_0", "q6_k", "q4_k_m"] {
            let out = tmp.path().join(format!("{ty}.gguf"));
            let report = quantize_to_gguf(&hf, &QuantPlan::parse(ty).unwrap(), &out, &mut |_, _| {}).unwrap();
            let g = Gemma::load(&out).unwrap();
            // Every matrix is quantized (the AltUp router and coefficients
            // and the MoE router stay f32, as llama.cpp's converter keeps them).
            let (mut quantized, mut all) = (0, 0);
            g.model.weights.for_each_matrix(&mut |m| {
                all += 1;
                quantized += usize::from(m.dtype().is_quantized());
            });
            let routers = cfg.num_layers() * (usize::from(cfg.altup.is_some()) + usize::from(cfg.moe.is_some()));
            let experts = cfg.moe.map_or(0, |m| 2 * m.experts * cfg.num_layers());
            assert_eq!(quantized, all - routers, "{fixture} {ty}: matrices left unquantized ({:?})", report.type_counts);
            assert!(report.type_counts.get("f16").is_none_or(|&n| n == 0), "{fixture} {ty}: f16 fallbacks {:?}", report.type_counts);
            // Round trip per tensor: each matrix (each expert) dequantized
            // against the f32 file, the worst relative RMS error per type.
            let mut worst: std::collections::BTreeMap<String, f64> = Default::default();
            let mut check = |dtype: gemma::DType, q: &gemma_core::Matrix, f: &gemma_core::Matrix, name: &str| {
                let e = rel_rms(&gemma_quant::to_f32_vec(&q.storage), &gemma_quant::to_f32_vec(&f.storage));
                // Uniform weights: about step/√12 of an RMS of bound/√3.
                let bound = match dtype {
                    gemma::DType::Q8_0 => 0.006,
                    gemma::DType::Q6_K => 0.025,
                    gemma::DType::Q5_0 | gemma::DType::Q5_1 | gemma::DType::Q5_K => 0.05,
                    gemma::DType::Q4_K | gemma::DType::Q4_0 | gemma::DType::Q4_1 => 0.09,
                    _ => 1e-6,
                };
                assert!(e < bound, "{fixture} {ty}: {name} ({dtype}) round trip error {e}");
                let w = worst.entry(dtype.to_string()).or_default();
                *w = w.max(e);
            };
            g.model.weights.visit(&mut |s, l, t| {
                let name = s.gguf_name(l);
                match (t, reference.model.weights.get(s.part, l)) {
                    (gemma_model::tensors::Tensor::Matrix(q), Some(gemma_model::tensors::Tensor::Matrix(f))) => check(q.dtype(), q, f, &name),
                    (gemma_model::tensors::Tensor::Stack(qs), Some(gemma_model::tensors::Tensor::Stack(fs))) => {
                        qs.iter().zip(fs).for_each(|(q, f)| check(q.dtype(), q, f, &name));
                    }
                    (gemma_model::tensors::Tensor::Vector(q), Some(gemma_model::tensors::Tensor::Vector(f))) => assert_eq!(q, f, "{fixture} {ty}: {name}"),
                    (_, other) => panic!("{fixture} {ty}: {name} is {t:?} here but {other:?} in the f32 file"),
                }
            });
            let worst: Vec<String> = worst.iter().map(|(d, e)| format!("{d} {e:.4}")).collect();
            let got = g.model.forward(&ids, &mut g.model.new_cache(), LogitsMode::All).unwrap();
            let err = rel_rms(&got, &want);
            let ratio = (nll(&got, &ids, vocab) - want_nll).exp();
            table.push_str(&format!("{fixture} | {ty} | {quantized} / {all} ({experts} experts) | {} | {err:.4} | {ratio:.4}\n", worst.join(", ")));
            // A random network amplifies rounding through its layers far
            // more than a trained one (the same weights converted to q8_0 at
            // load, `--dtype q8_0`, move the logits as much: 6–22%; the MoE's
            // routing flips add to it): this only guards against garbage.
            assert!(err < 1.0 && ratio.is_finite(), "{fixture} {ty}: logits relative RMS error {err}, perplexity ratio {ratio}");
        }
    }
    println!("{table}");
}

/// QLoRA on the quantized 3n/4 models is training on their dequantized
/// weights (as bitsandbytes computes it): the loss and every LoRA gradient
/// of the q4_k_m file (Q4_K/Q6_K/Q5_0 matrices and experts, multiplied with
/// f32 activations, the frozen 3n/4 steps included) equal those of the same
/// file converted to f32 at load: bit for bit for 3n and the E-style model.
#[test]
fn qlora_on_quantized_gemma3n_and_gemma4_is_training_on_the_dequantized_weights() {
    use gemma::train::backward::{loss_and_grad, Example};
    use gemma::train::{LoraSpec, TrainableLora};
    let batch: Vec<Example> = [(12usize, 1usize), (9, 3)]
        .iter()
        .enumerate()
        .map(|(s, &(n, first))| Example {
            ids: (0..n).map(|i| if i == 0 { 2 } else { 3 + ((i * 71 + s * 13) % 400) as u32 }).collect(),
            targets: (0..n).map(|i| i >= first).collect(),
        })
        .collect();
    let count: usize = batch.iter().map(Example::count).sum();
    for fixture in ["tiny-gemma3n", "tiny-gemma4", "tiny-gemma4-moe"] {
        let tmp = tempfile::tempdir().unwrap();
        let hf = tmp.path().join("hf");
        write_random_checkpoint(fixture, &wide_config(fixture), &hf);
        let gguf = tmp.path().join("q4_k_m.gguf");
        quantize_to_gguf(&hf, &QuantPlan::parse("q4_k_m").unwrap(), &gguf, &mut |_, _| {}).unwrap();
        let quantized = Gemma::load(&gguf).unwrap();
        let dequantized = Gemma::load_with(&gguf, &gemma::LoadOptions { dtype: Some(gemma::DType::F32), ..Default::default() }, &mut |_, _| {}).unwrap();
        let mut types = std::collections::BTreeSet::new();
        quantized.model.weights.for_each_matrix(&mut |m| {
            types.insert(m.dtype().to_string());
        });
        assert!(types.contains("q4_k"), "{fixture}: {types:?}");
        let spec = LoraSpec { rank: 4, alpha: 8.0, rslora: false, targets: [true; 7], dropout: 0.0 };
        let mut init = TrainableLora::init(&quantized.model.config, spec, 5).unwrap();
        let mut k = 3u64;
        for p in init.layers.iter_mut().flatten().flatten() {
            for b in &mut p.b {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *b = ((k >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            }
        }
        let run = |g: &Gemma| {
            let mut lora = init.clone();
            let mb = loss_and_grad(&g.model, &mut lora, &batch, 1.0 / count as f32, 0, &mut gemma_model::Tape::default(), true).unwrap();
            (mb.loss_sum / count as f64, lora.tensors(true).into_iter().map(|(n, _, v)| (n, v.to_vec())).collect::<Vec<_>>())
        };
        let ((lq, gq), (lf, gf)) = (run(&quantized), run(&dequantized));
        assert!((lq - lf).abs() <= 1e-5 * lf.abs(), "{fixture}: loss {lq} (quantized) vs {lf} (dequantized)");
        let mut worst = 0f64;
        for ((name, a), (_, b)) in gq.iter().zip(&gf) {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            let e = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale.max(1e-12);
            worst = worst.max(e);
            // Bit for bit but for the MoE: its experts see a few rows each,
            // where the f32 copy's product rounds differently from the
            // quantized path's (loss 5e-6 relative apart), and a near-tie of
            // the router's top-k can then flip (worst gradient 3.2e-3).
            let tol = if fixture == "tiny-gemma4-moe" { 1e-2 } else { 0.0 };
            assert!(e <= tol, "{fixture}: {name}: gradient differs by {e} of its largest");
        }
        println!("{fixture} q4_k_m ({types:?}): loss {lq:.7} vs dequantized {lf:.7}; worst gradient {worst:.1e} of its tensor's largest");
    }
}
