//! `gemma_rs._native`: the Python module over the engine (built by maturin,
//! see `pyproject.toml` and docs/PYTHON.md). One [`PyGemma`] holds the model
//! and a continuous-batching engine, so Python threads that generate on the
//! same object share batched steps; the GIL is released while the engine
//! works, Ctrl-C cancels between tokens, errors become Python exceptions.

mod errors;
mod gemma_py;
mod stream;

use pyo3::prelude::*;

/// The native module (`gemma_rs._native`); `gemma_rs` re-exports it.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<gemma_py::PyGemma>()?;
    m.add_class::<stream::TextStream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
