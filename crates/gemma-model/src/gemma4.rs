//! Gemma 4's config fields beyond Gemma 3's, read into the per-layer specs
//! (`per_layer_config` or `global_head_dim`/`num_global_key_value_heads`,
//! `attention_k_eq_v`, `num_kv_shared_layers`, `use_double_wide_mlp`) and
//! the model-wide extras (per-layer embeddings, MoE). As transformers 5.x
//! `Gemma4TextConfig` defines them.

use crate::config::{Fields, LayerSpec, MoeSpec};
use gemma_core::{GemmaError, Result};
use serde_json::Value;

/// Model-wide Gemma 3n/4 settings.
pub(crate) struct Extra {
    pub per_layer_input_size: usize,
    pub per_layer_vocab_size: usize,
    pub moe: Option<MoeSpec>,
    pub altup: Option<crate::config::AltUpSpec>,
    pub laurel_rank: usize,
}

impl Extra {
    /// Nothing (Gemma 1–3).
    pub fn none() -> Self {
        Self { per_layer_input_size: 0, per_layer_vocab_size: 0, moe: None, altup: None, laurel_rank: 0 }
    }
}

/// A non-negative integer field (0 allowed, unlike `Fields::usize_opt`).
pub(crate) fn count(f: &Fields, key: &str) -> Result<usize> {
    match f.get(key) {
        None => Ok(0),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| GemmaError::config(f.name(key), format!("expected a non-negative integer, found {v}"))),
    }
}

/// Read the Gemma 4 fields, adjusting `layers` (parsed with the sliding
/// geometry) in place.
pub(crate) fn parse(f: &Fields, layers: &mut [LayerSpec]) -> Result<Extra> {
    let n = layers.len();
    let k_eq_v = f.bool_opt("attention_k_eq_v")?.unwrap_or(false);
    let global_kv = f.usize_opt("num_global_key_value_heads")?;
    let global_hd = f.usize_opt("global_head_dim")?;
    // Full layers: their own head width (and KV heads with k_eq_v).
    for spec in layers.iter_mut().filter(|l| !l.attention.is_sliding()) {
        if let Some(hd) = global_hd {
            spec.head_dim = hd;
        }
        if k_eq_v {
            spec.k_eq_v = true;
            if let Some(kv) = global_kv {
                spec.num_kv_heads = kv;
            }
        }
    }
    // `per_layer_config` (what save_pretrained writes) wins: {"05": {"head_dim": 512, "num_key_value_heads": 2}}.
    if let Some(plc) = f.get("per_layer_config") {
        let map = plc.as_object().ok_or_else(|| GemmaError::config(f.name("per_layer_config"), "expected an object"))?;
        for (key, v) in map {
            let field = f.name(&format!("per_layer_config.{key}"));
            let l: usize = key.parse().map_err(|_| GemmaError::config(&field, "keys must be layer indices"))?;
            let spec = layers.get_mut(l).ok_or_else(|| GemmaError::config(&field, format!("layer {l} does not exist ({n} layers)")))?;
            let o = v.as_object().ok_or_else(|| GemmaError::config(&field, "expected an object"))?;
            for (k, x) in o {
                let val = x.as_u64().filter(|&v| v > 0).ok_or_else(|| GemmaError::config(format!("{field}.{k}"), format!("expected a positive integer, found {x}")))? as usize;
                match k.as_str() {
                    "head_dim" => spec.head_dim = val,
                    "num_key_value_heads" => spec.num_kv_heads = val,
                    other => return Err(GemmaError::config(format!("{field}.{other}"), "unknown per-layer field")),
                }
            }
        }
    }
    for (l, spec) in layers.iter().enumerate() {
        if spec.head_dim % 2 != 0 {
            return Err(GemmaError::config(f.name("per_layer_config"), format!("layer {l}: head_dim {} must be even for RoPE", spec.head_dim)));
        }
    }
    let first = kv_sharing(f, layers)?;
    if f.bool_opt("use_double_wide_mlp")?.unwrap_or(false) {
        layers[first..].iter_mut().for_each(|l| l.intermediate_size *= 2);
    }
    let per_layer_input_size = count(f, "hidden_size_per_layer_input")?;
    let per_layer_vocab_size = match f.usize_opt("vocab_size_per_layer_input")? {
        Some(v) => v,
        None => f.usize("vocab_size")?,
    };
    let moe = if f.bool_opt("enable_moe_block")?.unwrap_or(false) {
        let experts = f.usize("num_experts")?;
        let top_k = f.usize("top_k_experts")?;
        if top_k > experts {
            return Err(GemmaError::config(f.name("top_k_experts"), format!("{top_k} is more than num_experts {experts}")));
        }
        Some(MoeSpec { experts, top_k, intermediate_size: f.usize("moe_intermediate_size")? })
    } else {
        None
    };
    if let Some(Value::String(act)) = f.get("hidden_activation") {
        if act != "gelu_pytorch_tanh" {
            return Err(GemmaError::config(f.name("hidden_activation"), format!("activation `{act}` is not supported")));
        }
    }
    Ok(Extra { per_layer_input_size, per_layer_vocab_size, moe, altup: None, laurel_rank: 0 })
}

/// KV sharing (Gemma 3n and 4): the last `num_kv_shared_layers` layers read
/// the cache of the last earlier layer of their own type. Returns the first
/// sharing layer.
pub(crate) fn kv_sharing(f: &Fields, layers: &mut [LayerSpec]) -> Result<usize> {
    let n = layers.len();
    let shared = count(f, "num_kv_shared_layers")?;
    if shared > n {
        return Err(GemmaError::config(f.name("num_kv_shared_layers"), format!("{shared} is more than the {n} layers")));
    }
    let first = n - shared;
    for l in first..n {
        let sliding = layers[l].attention.is_sliding();
        let src = (0..first).rev().find(|&j| layers[j].attention.is_sliding() == sliding).ok_or_else(|| {
            GemmaError::config(f.name("num_kv_shared_layers"), format!("layer {l} shares keys and values, but no earlier layer of its type computes them"))
        })?;
        if layers[src].head_dim != layers[l].head_dim || layers[src].num_kv_heads != layers[l].num_kv_heads {
            return Err(GemmaError::config(f.name("num_kv_shared_layers"), format!("layer {l} and its source {src} differ in head geometry")));
        }
        layers[l].kv_source = Some(src);
    }
    Ok(first)
}

// ---- The forward's Gemma 4 steps (called from `forward.rs`). ----

use crate::forward::{Model, Seg};
use crate::weights::{MoeWeights, PleLayerWeights};
use crate::workspace::{buf, Workspace};
use crate::KvCache;
use gemma_kernels::geglu::geglu;
use gemma_kernels::ops::rms_norm_in_place;

/// RMSNorm without a gain over each `hd`-wide head of `v` (Gemma 4's value norm).
pub(crate) fn scale_free_norm(v: &mut [f32], hd: usize, eps: f32) {
    ONES.with(|o| {
        let mut o = o.borrow_mut();
        if o.len() < hd {
            o.resize(hd, 1.0);
        }
        rms_norm_in_place(v, &o[..hd], eps);
    });
}

thread_local! {
    /// A row of ones (the gain of a scale-free norm).
    static ONES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The per-layer inputs of every row, `[n, layers · P]` into `sc.ple`, from
/// the scaled embeddings in `sc.x`: `(norm(proj(e) / √hidden) + table[tok] · √P) / √2`.
pub(crate) fn per_layer_inputs(m: &Model, segs: &[Seg], items: &[(&[u32], &mut KvCache)], sc: &mut Workspace) {
    let cfg = &m.config;
    let Some(w) = &m.weights.ple else { return };
    let (hidden, p) = (cfg.hidden_size, cfg.per_layer_input_size);
    let lp = cfg.num_layers() * p;
    let n: usize = segs.iter().map(|s| s.n).sum();
    let out = buf(&mut sc.ple, n * lp);
    Model::project_plain(segs, &sc.x[..n * hidden], &w.proj, out);
    let inv_h = (hidden as f32).powf(-0.5);
    out.iter_mut().for_each(|v| *v *= inv_h);
    rms_norm_in_place(out, &w.norm, cfg.rms_norm_eps);
    let scale_p = cfg.dtype.unwrap_or(gemma_core::DType::F32).round((p as f32).sqrt());
    let inv_sqrt2 = std::f32::consts::FRAC_1_SQRT_2;
    SCRATCH.with(|m| {
        let mut m = m.borrow_mut();
        let row = buf(&mut m.table_row, lp);
        for seg in segs {
            for (t, &tok) in items[seg.item].0.iter().enumerate() {
                // Ids past the per-layer table (Gemma 3n's is shorter than the vocabulary) read row 0.
                let tok = if (tok as usize) < w.embed.rows { tok as usize } else { 0 };
                gemma_quant::read_f32(&w.embed.storage, tok * lp, row);
                let dst = &mut out[(seg.row0 + t) * lp..(seg.row0 + t + 1) * lp];
                dst.iter_mut().zip(row.iter()).for_each(|(d, &e)| *d = (*d + e * scale_p) * inv_sqrt2);
            }
        }
    });
}

/// Buffers of the per-layer inputs and the MoE block, kept from call to
/// call on the calling thread: decoding allocates nothing once warm.
#[derive(Default)]
struct Scratch {
    table_row: Vec<f32>,
    xr: Vec<f32>,
    logits: Vec<f32>,
    p: Vec<f32>,
    order: Vec<usize>,
    /// (row, weight) per expert.
    routed: Vec<Vec<(usize, f32)>>,
    xin: Vec<f32>,
    picked: Vec<(usize, f32)>,
    xs: Vec<f32>,
    gu: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    y: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Layer `l`'s per-layer input `norm(proj(gelu(gate·x) ⊙ e_l))` `[n, hidden]`,
/// returned in `y` (Gemma 4 adds it to the residual, Gemma 3n to its
/// AltUp streams past the first). `tape` records what its backward needs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn per_layer_delta<'y>(
    w: &PleLayerWeights,
    l: usize,
    layers: usize,
    segs: &[Seg],
    x: &[f32],
    ple: &[f32],
    p: usize,
    eps: f32,
    g: &mut Vec<f32>,
    y: &'y mut Vec<f32>,
    mut tape: Option<&mut crate::tape::LayerTape>,
) -> &'y mut [f32] {
    let n: usize = segs.iter().map(|s| s.n).sum();
    let hidden = x.len() / n;
    // `ple` is the workspace buffer: it may be longer than this call's rows.
    let lp = layers * p;
    let gate = buf(g, 2 * n * p);
    let (gate, e) = gate.split_at_mut(n * p);
    Model::project_plain(segs, x, &w.gate, gate);
    for t in 0..n {
        e[t * p..(t + 1) * p].copy_from_slice(&ple[t * lp + l * p..t * lp + (l + 1) * p]);
    }
    if let Some(t) = tape.as_deref_mut() {
        crate::tape::record(&mut t.ple_gate, gate);
        crate::tape::record(&mut t.ple_e, e);
    }
    geglu(gate, e);
    let y = buf(y, n * hidden);
    Model::project_plain(segs, gate, &w.proj, y);
    if let Some(t) = tape {
        crate::tape::record(&mut t.ple_z, y);
    }
    rms_norm_in_place(y, &w.norm, eps);
    y
}

/// The MoE block: `dense` (the dense MLP's output, in place) becomes
/// `norm₁(dense) + norm₂(experts(norm(r)))`, the experts chosen per token
/// from the residual `r` by the router (softmax over all experts in f32,
/// top-k renormalized, times each expert's scale). Each expert runs over the
/// rows routed to it, decode rows together and each prefill segment apart,
/// as the dense projections do, so a sequence's result does not depend on
/// the others in the batch.
/// `tape` records the routes and the experts' sum for the backward.
pub(crate) fn moe_block(w: &MoeWeights, segs: &[Seg], r: &[f32], dense: &mut [f32], eps: f32, scratch: &mut Vec<f32>, tape: Option<&mut crate::tape::LayerTape>) {
    SCRATCH.with(|m| moe_block_in(w, segs, r, dense, eps, scratch, &mut m.borrow_mut(), tape));
}

#[allow(clippy::too_many_arguments)]
fn moe_block_in(w: &MoeWeights, segs: &[Seg], r: &[f32], dense: &mut [f32], eps: f32, scratch: &mut Vec<f32>, m: &mut Scratch, mut tape: Option<&mut crate::tape::LayerTape>) {
    let n: usize = segs.iter().map(|s| s.n).sum();
    let hidden = r.len() / n;
    let experts = w.gate_up.len();
    let ff = w.down.first().map_or(0, |d| d.cols);
    rms_norm_in_place(dense, &w.post_norm_dense, eps);
    // Router: scale-free norm of the residual, times scale / √hidden.
    m.xr.clear();
    m.xr.extend_from_slice(r);
    scale_free_norm(&mut m.xr, hidden, eps);
    let k = (hidden as f32).powf(-0.5);
    for row in m.xr.chunks_exact_mut(hidden) {
        row.iter_mut().zip(&w.router_scale).for_each(|(v, s)| *v *= s * k);
    }
    let logits = buf(&mut m.logits, n * experts);
    Model::project_plain(segs, &m.xr, &w.router, logits);
    m.routed.resize_with(experts, Vec::new);
    m.routed.iter_mut().for_each(Vec::clear);
    if let Some(tp) = tape.as_deref_mut() {
        tp.moe_routes.clear();
    }
    for (t, lg) in logits.chunks_exact(experts).enumerate() {
        let max = lg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        m.p.clear();
        m.p.extend(lg.iter().map(|&v| (v - max).exp()));
        let p = &m.p;
        let z: f32 = p.iter().sum();
        m.order.clear();
        m.order.extend(0..experts);
        // Highest probability first; ties to the lower index.
        m.order.sort_unstable_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let top = &m.order[..w.top_k];
        let sum: f32 = top.iter().map(|&e| p[e] / z).sum();
        for &e in top {
            m.routed[e].push((t, p[e] / z / sum * w.expert_scale[e]));
            if let Some(tp) = tape.as_deref_mut() {
                tp.moe_routes.push((t, e, p[e] / z / sum));
            }
        }
    }
    // Experts' input.
    m.xin.clear();
    m.xin.extend_from_slice(r);
    rms_norm_in_place(&mut m.xin, &w.pre_norm, eps);
    let out = buf(scratch, n * hidden);
    out.fill(0.0);
    // Sub-segments (on the stack for up to 16 segments: no allocation).
    let mut stack = [segs[0]; 16];
    let mut heap = Vec::new();
    let sub_all: &mut [Seg] = if segs.len() <= stack.len() {
        &mut stack
    } else {
        heap.resize(segs.len(), segs[0]);
        &mut heap
    };
    for (e, rows) in m.routed.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        // Sub-segments over the routed rows: decode rows first, then each
        // prefill segment's rows, in row order.
        let mut nsub = 0;
        m.picked.clear();
        for decode in [true, false] {
            for s in segs.iter().filter(|s| s.decode == decode) {
                let start = m.picked.len();
                m.picked.extend(rows.iter().copied().filter(|(t, _)| (s.row0..s.row0 + s.n).contains(t)));
                if m.picked.len() > start {
                    sub_all[nsub] = Seg { row0: start, n: m.picked.len() - start, ..*s };
                    nsub += 1;
                }
            }
        }
        let sub = &sub_all[..nsub];
        let rows_in = m.picked.len();
        m.xs.clear();
        for &(t, _) in &m.picked {
            m.xs.extend_from_slice(&m.xin[t * hidden..(t + 1) * hidden]);
        }
        let gu = buf(&mut m.gu, rows_in * 2 * ff);
        Model::project_plain(sub, &m.xs, &w.gate_up[e], gu);
        m.g.clear();
        m.u.clear();
        for row in gu.chunks_exact(2 * ff) {
            m.g.extend_from_slice(&row[..ff]);
            m.u.extend_from_slice(&row[ff..]);
        }
        geglu(&mut m.g, &m.u);
        let y = buf(&mut m.y, rows_in * hidden);
        Model::project_plain(sub, &m.g, &w.down[e], y);
        for (i, &(t, wt)) in m.picked.iter().enumerate() {
            out[t * hidden..(t + 1) * hidden].iter_mut().zip(&y[i * hidden..(i + 1) * hidden]).for_each(|(o, v)| *o += v * wt);
        }
    }
    if let Some(tp) = tape {
        crate::tape::record(&mut tp.moe_raw, out);
    }
    rms_norm_in_place(out, &w.post_norm_experts, eps);
    dense.iter_mut().zip(out.iter()).for_each(|(d, o)| *d += o);
}

/// Config fields transformers defines for Gemma 1–4 text models (or wrote
/// in older versions), and generic fields that never change the math.
const KNOWN_FIELDS: &[&str] = &[
    "_name_or_path", "_sliding_window_pattern", "architectures", "attention_bias", "attention_dropout", "attention_k_eq_v",
    "attn_logit_softcapping", "bos_token_id", "chunk_size_feed_forward", "dtype", "enable_moe_block", "eos_token_id",
    "final_logit_softcapping", "head_dim", "hidden_act", "hidden_activation", "hidden_size", "hidden_size_per_layer_input",
    "id2label", "initializer_range", "intermediate_size", "is_encoder_decoder", "label2id", "layer_types",
    "max_position_embeddings", "model_type", "moe_intermediate_size", "num_attention_heads", "num_experts", "num_hidden_layers",
    "num_key_value_heads", "num_kv_shared_layers", "output_attentions", "output_hidden_states", "pad_token_id",
    "per_layer_config", "problem_type", "query_pre_attn_scalar", "return_dict", "rms_norm_eps", "rope_parameters",
    "sliding_window", "tie_word_embeddings", "top_k_experts", "transformers_version", "use_bidirectional_attention",
    "use_cache", "use_double_wide_mlp", "vocab_size", "vocab_size_per_layer_input",
    // Older transformers versions and released checkpoints.
    "rope_theta", "rope_scaling", "rope_local_base_freq", "sliding_window_pattern", "torch_dtype", "cache_implementation",
    "global_head_dim", "num_global_key_value_heads", "use_sliding_window", "final_logit_soft_cap",
];

/// Fields only Gemma 3n has (altup_coef_clip and altup_lr_multiplier act
/// in training only).
const GEMMA3N_FIELDS: &[&str] = &[
    "activation_sparsity_pattern", "altup_active_idx", "altup_coef_clip", "altup_correct_scale", "altup_num_inputs",
    "altup_lr_multiplier", "laurel_rank",
];

/// Words that mark a field as one that may change the forward pass.
const MATH_WORDS: &[&str] = &[
    "rope", "norm", "attn", "attention", "softcap", "scal", "head", "layer", "window", "expert", "moe", "act", "embed", "bias",
    "eps", "dim", "size", "rotary", "kv", "quant", "altup", "laurel", "sparsity", "ffn", "mlp", "logit",
];

/// Refuse a config field that transformers does not define for Gemma and
/// that may change the math (its name says so), rather than silently
/// ignore it; `quantization_config` (pre-quantized bitsandbytes/GPTQ/AWQ
/// weights) is refused by name. Other unknown fields (tool versions and
/// the like) are ignored.
pub(crate) fn check_unknown_fields(f: &Fields, family: crate::config::Family) -> gemma_core::Result<()> {
    if f.get("quantization_config").is_some() {
        return Err(GemmaError::config(
            f.name("quantization_config"),
            "pre-quantized checkpoints (bitsandbytes, GPTQ, AWQ, …) are not supported; load the bf16/f32 weights (then --dtype q4_k etc.) or a GGUF file",
        ));
    }
    for key in f.obj.keys() {
        let own = family == crate::config::Family::Gemma3n && GEMMA3N_FIELDS.contains(&key.as_str());
        if own || KNOWN_FIELDS.contains(&key.as_str()) || f.get(key).is_none() {
            continue;
        }
        let lower = key.to_lowercase();
        if MATH_WORDS.iter().any(|w| lower.contains(w)) {
            return Err(GemmaError::config(
                f.name(key),
                "is not a field gemma-rs knows for this architecture, and it may change the math; refusing rather than guessing",
            ));
        }
    }
    Ok(())
}
