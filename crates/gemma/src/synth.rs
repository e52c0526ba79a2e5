//! `gemma synth`: a random-weight GGUF of any published Gemma shape (the
//! rows of [`crate::variants::VARIANTS`]), in llama.cpp's layout for that
//! generation, so both engines load the same file. Speed does not depend
//! on trained values; such a file is for measuring, not for text.
//!
//! The tensors are walked as `gemma quantize` walks a loaded model (the
//! same names, types and k-quant mix), over placeholder weights that hold
//! no memory. Each matrix is written straight in its target type, block by
//! block, from a pool of blocks quantized once per type from N(0, 0.02)
//! values (valid blocks with realistic scales), streamed through a 1 MiB
//! buffer: memory stays at the pools and the buffer whatever the model's size.

use gemma_model::gguf_keys as keys;
use crate::quantize::{model_metadata, write_tensors, QuantPlan, QuantReport};
use gemma_core::rng::Rng;
use gemma_core::{DType, GemmaError, Result};
use gemma_formats::{GgufValue, GgufWriter, TensorFill};
use gemma_model::variants::{Variant, VARIANTS};
use gemma_model::{Family, Weights};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Standard deviation of the values the pools are quantized from (about
/// that of trained Gemma projection weights).
const SIGMA: f32 = 0.02;
/// Values per pool: 4,096 super-blocks of 256.
const POOL_VALUES: usize = 1 << 20;
/// Elements per unit copied from a float pool.
const FLOAT_UNIT: usize = 64;

/// The published variant named `name`: its slug (`gemma3-4b`,
/// `gemma4-26b-a4b`, as `gemma inspect --variants` lists), compared without
/// case, spaces, dashes, underscores and parentheses (`Gemma 3 4B` works).
pub fn find_variant(name: &str) -> Result<&'static Variant> {
    let key = |s: &str| s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    let want = key(name);
    VARIANTS.iter().find(|v| key(&slug(v)) == want).ok_or_else(|| {
        let names: Vec<String> = VARIANTS.iter().map(slug).collect();
        GemmaError::invalid("variant", format!("unknown variant `{name}` (one of: {})", names.join(", ")))
    })
}

/// A variant's short name: `gemma3-4b`, `gemma4-12b-unified`.
pub fn slug(v: &Variant) -> String {
    let family = match v.family {
        Family::Gemma1 => "gemma1",
        Family::Gemma2 => "gemma2",
        Family::Gemma3 => "gemma3",
        Family::Gemma3n => "gemma3n",
        Family::Gemma4 => "gemma4",
    };
    let size = v.size.to_ascii_lowercase().replace(" (", "-").replace(')', "").replace(' ', "-");
    format!("{family}-{size}")
}

/// Valid blocks of every type, quantized once from random values and
/// copied in random order into each tensor.
pub struct RandomBlocks {
    seed: u64,
    pools: Mutex<HashMap<DType, Arc<Pool>>>,
}

/// Encoded units of one type: `units` of `unit_elems` elements each.
struct Pool {
    unit_elems: usize,
    unit_bytes: usize,
    units: usize,
    bytes: Vec<u8>,
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut Rng) -> f32 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

impl RandomBlocks {
    /// Pools seeded by `seed` (the same seed writes the same file).
    pub fn new(seed: u64) -> Self {
        Self { seed, pools: Mutex::new(HashMap::new()) }
    }

    fn pool(&self, t: DType) -> Result<Arc<Pool>> {
        let mut pools = self.pools.lock().map_err(|_| GemmaError::Unsupported("a random block pool was poisoned".into()))?;
        if let Some(p) = pools.get(&t) {
            return Ok(p.clone());
        }
        let mut rng = Rng::new(self.seed ^ u64::from(t.ggml_id()).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let values: Vec<f32> = (0..POOL_VALUES).map(|_| SIGMA * normal(&mut rng)).collect();
        let mut bytes = Vec::new();
        gemma_quant::quantize(t, &values, &mut bytes)?;
        let unit_elems = if t.is_quantized() { t.block_size() } else { FLOAT_UNIT };
        let unit_bytes = t.bytes_for(unit_elems);
        let p = Arc::new(Pool { unit_elems, unit_bytes, units: POOL_VALUES / unit_elems, bytes });
        pools.insert(t, p.clone());
        Ok(p)
    }

    /// Writes `n` elements of type `t`: pool units in an order drawn from
    /// the seed and `salt` (one salt per tensor).
    pub fn fill(&self, t: DType, n: usize, salt: u64) -> Result<TensorFill> {
        let pool = self.pool(t)?;
        if !n.is_multiple_of(t.block_size()) {
            return Err(GemmaError::invalid("synth", format!("{n} values are not whole {t} blocks")));
        }
        let seed = self.seed.wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Ok(Box::new(move |w: &mut dyn Write| {
            let p = &pool;
            let mut rng = Rng::new(seed);
            let mut buf = Vec::with_capacity(1 << 20);
            let mut left = n;
            while left > 0 {
                let take = left.min(p.unit_elems);
                let i = (rng.next_u64() % p.units as u64) as usize;
                let unit = &p.bytes[i * p.unit_bytes..(i + 1) * p.unit_bytes];
                // A float tail takes whole elements of a unit.
                buf.extend_from_slice(&unit[..t.bytes_for(take)]);
                left -= take;
                if buf.len() + p.unit_bytes > 1 << 20 {
                    w.write_all(&buf)?;
                    buf.clear();
                }
            }
            w.write_all(&buf)
        }))
    }

    /// `len` gains near 1 (1 + N(0, 0.1)): norm and scale vectors.
    pub fn gains(&self, len: usize, salt: u64) -> Vec<f32> {
        let mut rng = Rng::new(self.seed ^ salt.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x5EED);
        (0..len).map(|_| 1.0 + 0.1 * normal(&mut rng)).collect()
    }
}

/// A SentencePiece vocabulary of exactly `n` pieces with Gemma's special
/// tokens (`<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3, the turn markers of
/// Gemma 1–3 and 4), the 256 byte pieces and filler words: it tokenizes any
/// text (bytes fall back), though not as Google's vocabulary does.
fn vocabulary(n: usize, w: &mut GgufWriter) {
    let mut tokens: Vec<(String, i32)> = ["<pad>", "<eos>", "<bos>"].iter().map(|s| (s.to_string(), 3)).collect();
    tokens.push(("<unk>".into(), 2));
    for s in ["<start_of_turn>", "<end_of_turn>", "<|turn>", "<turn|>"] {
        tokens.push((s.into(), 3));
    }
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 6)));
    tokens.push(("\u{2581}".into(), 1));
    for c in (0x21u8..0x7f).map(char::from) {
        tokens.push((c.to_string(), 1));
        tokens.push((format!("\u{2581}{c}"), 1));
    }
    let mut i = 0;
    while tokens.len() < n {
        tokens.push((format!("\u{2581}w{i}"), 1));
        i += 1;
    }
    tokens.truncate(n);
    let scores = (0..tokens.len()).map(|id| GgufValue::F32(-(id as f32))).collect();
    let types = tokens.iter().map(|(_, k)| GgufValue::I32(*k)).collect();
    w.set(keys::TOKENIZER_MODEL, GgufValue::String("llama".into()));
    w.set(keys::TOKENIZER_PRE, GgufValue::String("default".into()));
    w.set(keys::TOKENIZER_TOKENS, GgufValue::Array(tokens.into_iter().map(|(s, _)| GgufValue::String(s)).collect()));
    w.set(keys::TOKENIZER_SCORES, GgufValue::Array(scores));
    w.set(keys::TOKENIZER_TOKEN_TYPE, GgufValue::Array(types));
    for (key, id) in [("bos", 2), ("eos", 1), ("unknown", 3), ("padding", 0)] {
        w.set(&format!("tokenizer.ggml.{key}_token_id"), GgufValue::U32(id));
    }
    w.set(keys::ADD_BOS, GgufValue::Bool(true));
    w.set(keys::ADD_EOS, GgufValue::Bool(false));
    w.set(keys::ADD_SPACE_PREFIX, GgufValue::Bool(false));
}

/// What `synth` wrote.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// Tensors, bytes and types.
    pub tensors: QuantReport,
    /// The file.
    pub path: PathBuf,
}

/// The writer of a random model of `variant`'s shape, every tensor added
/// (their bytes are produced when it writes).
fn prepare(variant: &Variant, plan: &QuantPlan, seed: u64) -> Result<(GgufWriter, QuantReport)> {
    let c = variant.parse()?;
    let wts = Weights::placeholders(&c)?;
    let mut w = GgufWriter::new();
    model_metadata(&c, &format!("random {}", slug(variant)), plan, &mut w)?;
    w.set(
        "general.description",
        GgufValue::String(format!(
            "gemma synth: random weights of the published {} {} shape, seed {seed}; for speed measurements, not text",
            variant.family.name(),
            variant.size
        )),
    );
    vocabulary(c.vocab_size, &mut w);
    let random = RandomBlocks::new(seed);
    let report = write_tensors(&c, &wts, plan, &mut w, Some(&random), &mut |_, _| {})?;
    Ok((w, report))
}

/// Write a random-weight model of `variant`'s shape, typed by `plan`, to
/// `out` (through `out.part`, renamed when complete: an interrupted run
/// leaves no truncated model behind).
pub fn synth(variant: &Variant, plan: &QuantPlan, out: &Path, seed: u64) -> Result<SynthReport> {
    let (w, mut report) = prepare(variant, plan, seed)?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(GemmaError::invalid("output", format!("{}: the folder {} does not exist", out.display(), dir.display())));
    }
    let need = w.file_len();
    if let Some(free) = free_bytes(dir) {
        // Keep 1 GiB for everything else on that disk.
        if free < need + (1 << 30) {
            return Err(GemmaError::invalid(
                "output",
                format!(
                    "{} needs {:.1} GB and {} has {:.1} GB free (keeping 1 GiB spare): free some space or write elsewhere",
                    out.display(),
                    need as f64 / 1e9,
                    dir.display(),
                    free as f64 / 1e9
                ),
            ));
        }
    }
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let written = w.write(&part).and_then(|()| std::fs::rename(&part, out).map_err(|e| GemmaError::io(out, e)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    report.bytes = std::fs::metadata(out).map_err(|e| GemmaError::io(out, e))?.len();
    Ok(SynthReport { tensors: report, path: out.to_path_buf() })
}

/// The file size `synth` would write, in bytes (without writing it).
pub fn synth_len(variant: &Variant, plan: &QuantPlan) -> Result<u64> {
    Ok(prepare(variant, plan, 0)?.0.file_len())
}

/// Free bytes for this user on the file system holding `dir` (None where unknown).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs is plain data, for which all zero bytes are a valid value.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `s` is a valid, writable statvfs.
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}
