//! `gemma synth` and `gemma bench --variant`: random-weight models of the
//! published shapes, for speed measurements.

use crate::args::SynthArgs;
use anyhow::{Context, Result};
use gemma::quantize::QuantPlan;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The note every random-weight result carries.
pub(crate) const RANDOM_NOTE: &str = "random weights of the published shape: the speed is that of the real model (the same shapes and types), the text is meaningless";

/// Write the model and say what was written.
fn write(variant: &str, qtype: &str, out: &Path, seed: u64) -> Result<()> {
    let v = gemma::synth::find_variant(variant)?;
    let plan = QuantPlan::parse(qtype)?;
    let len = gemma::synth::synth_len(v, &plan)?;
    eprintln!("writing {} {} {} ({:.2} GB) to {}", v.family.name(), v.size, plan.name, len as f64 / 1e9, out.display());
    let t0 = Instant::now();
    let r = gemma::synth::synth(v, &plan, out, seed).with_context(|| format!("cannot write {}", out.display()))?;
    let s = t0.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({:.2} GB, {} tensors: {}) in {s:.1}s ({:.0} MB/s)",
        out.display(),
        r.tensors.bytes as f64 / 1e9,
        r.tensors.tensors,
        r.tensors.type_counts.iter().map(|(t, n)| format!("{n} {t}")).collect::<Vec<_>>().join(", "),
        r.tensors.bytes as f64 / 1e6 / s.max(1e-9)
    );
    Ok(())
}

/// `gemma synth`.
pub(crate) fn synth(a: SynthArgs) -> Result<()> {
    write(&a.variant, &a.qtype, &a.out, a.seed)?;
    eprintln!("({RANDOM_NOTE})");
    Ok(())
}

/// A synthesized model file, removed when dropped.
pub(crate) struct TempModel {
    /// The file.
    pub path: PathBuf,
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `gemma bench --variant`: the model in a temporary file of the cache
/// (`<cache>/tmp/`, on disk rather than a RAM-backed /tmp).
pub(crate) fn temp_model(variant: &str, qtype: &str) -> Result<TempModel> {
    let dir = gemma::hub::cache_dir().join("tmp");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let v = gemma::synth::find_variant(variant)?;
    let path = dir.join(format!("synth-{}-{}-{}.gguf", gemma::synth::slug(v), qtype.to_ascii_lowercase(), std::process::id()));
    let model = TempModel { path };
    write(variant, qtype, &model.path, 0)?;
    Ok(model)
}
