//! `gemma_rs._native`: the Python module over the engine (built by maturin,
//! see `pyproject.toml` and docs/PYTHON.md). One [`PyGemma`] holds the model
//! and a continuous-batching engine, so Python threads that generate on the
//! same object share batched steps; the GIL is released while the engine
//! works, Ctrl-C cancels between tokens, errors become Python exceptions.

mod chat_py;
mod errors;
mod finetune_py;
mod gemma_py;
mod stream;

use pyo3::prelude::*;

/// Write `dst`, a GGUF file of the model at `src` (a folder, GGUF or
/// repo id) quantized to `type` (`q4_k_m`, `q8_0`, `q4_k`, `bf16`, …, as
/// `gemma quantize`); returns `{"tensors", "bytes", "types": {type: count}}`.
#[pyfunction]
#[pyo3(signature = (src, dst, r#type = "q4_k_m"))]
fn quantize<'py>(py: Python<'py>, src: &str, dst: std::path::PathBuf, r#type: &str) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let plan = gemma::quantize::QuantPlan::parse(r#type).map_err(errors::to_py)?;
    let src = src.to_string();
    let report = py
        .detach(move || -> gemma::Result<gemma::quantize::QuantReport> {
            let path = gemma::hub::resolve_model(Some(&src))?;
            gemma::quantize::quantize_to_gguf(&path, &plan, &dst, &mut |_, _| {})
        })
        .map_err(errors::to_py)?;
    let d = pyo3::types::PyDict::new(py);
    d.set_item("tensors", report.tensors)?;
    d.set_item("bytes", report.bytes)?;
    d.set_item("types", report.type_counts.into_iter().collect::<std::collections::BTreeMap<_, _>>())?;
    Ok(d)
}

/// The native module (`gemma_rs._native`); `gemma_rs` re-exports it.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<gemma_py::PyGemma>()?;
    m.add_class::<stream::TextStream>()?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(finetune_py::finetune, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
