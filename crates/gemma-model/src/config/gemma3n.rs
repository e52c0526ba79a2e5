//! Gemma 3n's config fields beyond Gemma 4's (AltUp, LAuReL, activation
//! sparsity; per-layer embeddings and KV sharing are shared with Gemma 4),
//! as transformers 5.x `Gemma3nTextConfig` defines them. The steps they add
//! are in `forward/gemma3n.rs`.

use super::gemma4::{kv_sharing, Extra};
use super::{AltUpSpec, Fields, LayerSpec};
use gemma_core::{GemmaError, Result};
use serde_json::Value;

/// Read the Gemma 3n fields, adjusting `layers` in place.
pub(crate) fn parse(f: &Fields, layers: &mut [LayerSpec]) -> Result<Extra> {
    let n = layers.len();
    kv_sharing(f, layers)?;
    // Activation sparsity per layer (transformers' default: 0.95 on the
    // first 10 layers of models deeper than 10).
    let pattern: Vec<f64> = match f.get("activation_sparsity_pattern") {
        None | Some(Value::Null) => (0..n).map(|i| if n > 10 && i < 10 { 0.95 } else { 0.0 }).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_f64())
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| GemmaError::config(f.name("activation_sparsity_pattern"), "expected a list of numbers"))?,
        Some(v) => match v.as_f64() {
            Some(p) => vec![p; n],
            None => return Err(GemmaError::config(f.name("activation_sparsity_pattern"), format!("expected a list of numbers, found {v}"))),
        },
    };
    if pattern.len() != n {
        return Err(GemmaError::config(f.name("activation_sparsity_pattern"), format!("has {} entries, num_hidden_layers is {n}", pattern.len())));
    }
    for (l, (spec, &p)) in layers.iter_mut().zip(&pattern).enumerate() {
        if !(0.0..1.0).contains(&p) {
            return Err(GemmaError::config(f.name("activation_sparsity_pattern"), format!("layer {l}: {p} is not in [0, 1)")));
        }
        // torch: Normal(0, 1).icdf(p) in f32.
        spec.gate_sparsity_k = (p > 0.0).then(|| normal_quantile(p as f32 as f64) as f32);
    }
    let streams = f.usize_opt("altup_num_inputs")?.unwrap_or(4);
    let active = super::gemma4::count(f, "altup_active_idx")?;
    if active >= streams {
        return Err(GemmaError::config(f.name("altup_active_idx"), format!("{active} is not below altup_num_inputs {streams}")));
    }
    let altup = AltUpSpec { streams, active, correct_scale: f.bool_opt("altup_correct_scale")?.unwrap_or(true) };
    let laurel_rank = f.usize_opt("laurel_rank")?.unwrap_or(64);
    let per_layer_input_size = f.usize_opt("hidden_size_per_layer_input")?.unwrap_or(256);
    let per_layer_vocab_size = f.usize_opt("vocab_size_per_layer_input")?.unwrap_or(262_144);
    Ok(Extra { per_layer_input_size, per_layer_vocab_size, moe: None, altup: Some(altup), laurel_rank })
}

/// The standard normal quantile `√2 · erfinv(2p − 1)`, by Newton's method
/// on an f64 `erf` (exact to ~1e-15 for the sparsities Gemma uses).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    let y = 2.0 * p - 1.0;
    // Start from a classic closed-form approximation, then polish.
    let a = 0.147;
    let ln = (1.0 - y * y).ln();
    let t = 2.0 / (std::f64::consts::PI * a) + ln / 2.0;
    let mut x = y.signum() * ((t * t - ln / a).sqrt() - t).sqrt();
    for _ in 0..8 {
        let d = erf(x) - y;
        x -= d / (std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp());
    }
    std::f64::consts::SQRT_2 * x
}

/// The standard normal CDF `(1 + erf(x/√2)) / 2` (the inverse of
/// [`normal_quantile`]; 0 at −∞).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return 0.0;
    }
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// `erf(x)` by its Taylor series (|x| < 3) or continued fraction of erfc.
fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        let (mut term, mut sum) = (x, x);
        for k in 1..200 {
            term *= -x * x / k as f64;
            let add = term / (2 * k + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        std::f64::consts::FRAC_2_SQRT_PI * sum
    } else {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))).
        let z = x.abs();
        let mut cf = z;
        for k in (1..60).rev() {
            cf = z + (k as f64 / 2.0) / cf;
        }
        let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / cf;
        x.signum() * (1.0 - erfc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_known_values() {
        // scipy.stats.norm.ppf
        for (p, q) in [(0.95, 1.6448536269514722), (0.5, 0.0), (0.9, 1.2815515655446004), (0.999, 3.090232306167813), (0.01, -2.3263478740408408)] {
            assert!((normal_quantile(p) - q).abs() < 1e-12, "{p}: {} vs {q}", normal_quantile(p));
        }
    }

    #[test]
    fn cdf_inverts_the_quantile_in_f32() {
        for p in [0.95f32, 0.5, 0.9, 0.99, 0.3] {
            let k = normal_quantile(p as f64) as f32;
            assert_eq!(normal_cdf(k as f64) as f32, p, "{p}");
        }
    }
}
