//! Waiting on the engine without holding the GIL, and the streaming iterator.

use crate::gemma_py::finish_reason;
use gemma_engine::{Event, Handle};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::time::Duration;

/// How often a wait looks for Ctrl-C (the GIL is taken back to ask).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// A waiter for engine events: blocks on the channel (no polling) for up
/// to [`SIGNAL_CHECK`] at a time.
pub struct Waiter(tokio::runtime::Runtime);

impl Waiter {
    /// A waiter (a small single-thread timer runtime of its own).
    pub fn new() -> PyResult<Self> {
        tokio::runtime::Builder::new_current_thread().enable_time().build().map(Waiter).map_err(|e| PyRuntimeError::new_err(format!("cannot start a timer: {e}")))
    }

    /// The next event of `handle` (None when the engine dropped it), the
    /// GIL released while waiting; Ctrl-C raises `KeyboardInterrupt`
    /// between events (the caller drops the handle, which cancels the
    /// request).
    pub fn next_event(&self, py: Python<'_>, handle: &mut Handle) -> PyResult<Option<Event>> {
        loop {
            let got = py.detach(|| self.0.block_on(async { tokio::time::timeout(SIGNAL_CHECK, handle.events.recv()).await.ok() }));
            // Also between events that keep coming: a signal handler runs only here.
            py.check_signals()?;
            if let Some(ev) = got {
                return Ok(ev);
            }
        }
    }
}

/// What a stream yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Text pieces (`generate(stream=True)`).
    Text,
    /// OpenAI `chat.completion.chunk` dicts.
    ChatChunk,
}

/// An iterator over a generation as it is made; dropping it (or leaving
/// the loop) cancels the rest.
#[pyclass(module = "gemma_rs")]
pub struct TextStream {
    handle: Option<Handle>,
    waiter: Waiter,
    shape: Shape,
    model: String,
    /// Chunks waiting to be yielded (a token's text, then the final chunk).
    pending: std::collections::VecDeque<Py<PyAny>>,
    first: bool,
}

impl TextStream {
    /// A stream over `handle`'s events.
    pub fn new(handle: Handle, shape: Shape, model: String) -> PyResult<Self> {
        Ok(Self { handle: Some(handle), waiter: Waiter::new()?, shape, model, pending: Default::default(), first: true })
    }

    /// A stream of chunks already made (an answer known only at its end).
    pub fn done(chunks: Vec<Py<PyAny>>, model: String) -> PyResult<Self> {
        Ok(Self { handle: None, waiter: Waiter::new()?, shape: Shape::ChatChunk, model, pending: chunks.into(), first: false })
    }

    /// A chat chunk with `delta` and `finish`.
    fn chunk(&mut self, py: Python<'_>, content: Option<&str>, finish: Option<&str>) -> PyResult<Py<PyAny>> {
        let d = PyDict::new(py);
        d.set_item("id", format!("chatcmpl-{}", self.handle.as_ref().map_or(0, |h| h.id)))?;
        d.set_item("object", "chat.completion.chunk")?;
        d.set_item("created", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))?;
        d.set_item("model", &self.model)?;
        let delta = PyDict::new(py);
        if std::mem::take(&mut self.first) {
            delta.set_item("role", "assistant")?;
        }
        if let Some(c) = content {
            delta.set_item("content", c)?;
        }
        let choice = PyDict::new(py);
        choice.set_item("index", 0)?;
        choice.set_item("delta", delta)?;
        choice.set_item("finish_reason", finish)?;
        d.set_item("choices", PyList::new(py, [choice])?)?;
        Ok(d.into_any().unbind())
    }

    /// Queue what `text` (and the finish, at the end) yields.
    fn push(&mut self, py: Python<'_>, text: &str, finish: Option<&str>) -> PyResult<()> {
        match self.shape {
            Shape::Text if !text.is_empty() => self.pending.push_back(pyo3::types::PyString::new(py, text).into_any().unbind()),
            Shape::Text => {}
            Shape::ChatChunk => {
                if !text.is_empty() || finish.is_none() {
                    let c = self.chunk(py, Some(text), None)?;
                    self.pending.push_back(c);
                }
                if finish.is_some() {
                    let c = self.chunk(py, None, finish)?;
                    self.pending.push_back(c);
                }
            }
        }
        Ok(())
    }
}

#[pymethods]
impl TextStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        loop {
            if let Some(x) = self.pending.pop_front() {
                return Ok(x);
            }
            let Some(handle) = self.handle.as_mut() else { return Err(PyStopIteration::new_err(())) };
            match self.waiter.next_event(py, handle)? {
                Some(Event::Token(t)) if !t.text.is_empty() => self.push(py, &t.text, None)?,
                Some(Event::Token(_)) | Some(Event::Prompt(_)) => {}
                Some(Event::Done(s)) => {
                    self.push(py, &s.tail_text, Some(finish_reason(&s.finish)))?;
                    self.handle = None;
                }
                Some(Event::Error(e)) => {
                    self.handle = None;
                    return Err(PyRuntimeError::new_err(e));
                }
                None => {
                    self.handle = None;
                    return Err(PyRuntimeError::new_err("the engine stopped"));
                }
            }
        }
    }

    /// Stop generating (the rest is cancelled).
    fn close(&mut self) {
        self.handle = None;
        self.pending.clear();
    }
}
