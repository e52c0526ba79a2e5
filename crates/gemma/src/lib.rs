//! gemma-rs: run Google's Gemma 1, 2 and 3 text models from Rust.
//!
//! Load a Hugging Face model folder and stream a completion:
//!
//! ```
//! use gemma::{Gemma, SamplingParams};
//!
//! # fn main() -> Result<(), gemma::GemmaError> {
//! let gemma = Gemma::load("testdata/tiny-gemma3")?;
//! let mut session = gemma.new_session();
//! let mut request = gemma.request(&gemma.encode_prompt("The quick brown fox")?);
//! request.max_new_tokens = 16;
//! request.params = SamplingParams { temperature: 0.7, top_p: 0.95, seed: 42, ..Default::default() };
//! let out = gemma.generate(&mut session, &request, &mut |piece| {
//!     print!("{piece}");
//!     true // keep going
//! })?;
//! assert!(out.tokens.len() <= 16);
//! # Ok(())
//! # }
//! ```

use gemma_model::gguf_keys as keys;
use gemma_formats::GgufValue;
use std::path::{Path, PathBuf};

pub mod bench;
pub mod call_syntax;
mod gguf_gemma3n_write;
mod gguf_gemma4_write;
pub mod gguf_tokenizer;
pub mod embed;
pub mod finetune;
pub mod hub;
pub mod merge;
pub mod pull;
pub mod quantize;
pub mod synth;
pub mod tools;
pub mod mmproj_write;
pub mod vision;

pub use gemma_core::{DType, GemmaError, Result};
/// LoRA / QLoRA fine-tuning (`gemma finetune`).
pub use gemma_train as train;
pub use gemma_generate::speculative;
pub use gemma_generate::{
    generate, json_without_whitespace, perplexity, windows_exact, windows_with_bos, Adapter, Constraint, FinishReason, MediaInput, GenerateRequest, Grammar, GrammarCounts, GrammarProcessor, GrammarStats, Generation, LogitsProcessor, GenerationConfig, Perplexity, PromptLogprob, SpecMode, SpecStats, Speculation,
    Sampler, SamplingParams, SequenceState, Session, Step, TokenLogprob, TokenStreamDecoder, MAX_TOP_LOGPROBS,
};
pub use gemma_model::assistant::is_assistant;
pub use gemma_model::{variants, Assistant, AttentionKind, Family, GemmaConfig, KvCache, KvType, LogitsMode, LoraAdapter, Media, Model, Numerics, Workspace};
pub use gemma_tokenizer::{ChatMessage, ChatTemplate, GemmaTokenizer};

/// Default number of new tokens when neither caller nor checkpoint says.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Convert weight matrices to this dtype at load time (None: as stored).
    pub dtype: Option<DType>,
    /// A PEFT LoRA adapter folder to apply on top of the weights.
    pub lora: Option<PathBuf>,
    /// GGUF: read the file into huge-page-backed memory instead of mapping it
    /// (slower load, faster decoding; see `GgufFile::open_with`).
    pub hugepages: bool,
    /// llama.cpp's vision file (`mmproj.gguf`) beside a GGUF text model.
    pub mmproj: Option<PathBuf>,
    /// Gemma 4: the soft-token budget of an image (None: the checkpoint's, else 280).
    pub image_tokens: Option<usize>,
}

/// A loaded Gemma: model, tokenizer and generation defaults.
#[derive(Debug)]
pub struct Gemma {
    /// Weights, config and the forward pass.
    pub model: Model,
    /// Tokenizer and chat template.
    pub tokenizer: GemmaTokenizer,
    /// Defaults from `generation_config.json`.
    pub generation_config: GenerationConfig,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The grammar compiler over this tokenizer (built on first use).
    grammars: std::sync::OnceLock<gemma_generate::GrammarCompiler>,
    /// sentence-transformers modules shipped beside the model (EmbeddingGemma).
    pub sentence: Option<embed::SentenceModules>,
    /// A GGUF file's declared type (`general.file_type`, e.g. `Q4_K_M`).
    pub file_type: Option<String>,
    /// The vision tower, for checkpoints that have one.
    pub vision: Option<vision::Vision>,
}

/// Most tokens [`Gemma::embed`] (and the serving engine) run in one
/// embedding pass; a longer text runs alone.
pub const EMBED_BATCH_TOKENS: usize = 2048;

/// What [`Gemma::embed`] does with each text.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    /// A named prompt of the model (`query`, `document`, …) prepended to each text.
    pub prompt_name: Option<String>,
    /// A literal prompt prepended to each text (wins over `prompt_name`).
    pub prompt: Option<String>,
    /// Keep the first `dimensions` values and renormalize (Matryoshka).
    pub dimensions: Option<usize>,
}

/// One text's embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The vector.
    pub values: Vec<f32>,
    /// Tokens the model read (prompt and special tokens included).
    pub tokens: usize,
}

impl Gemma {
    /// Load a Hugging Face model folder with default options.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default(), &mut |_, _| {})
    }

    /// Load with options; `progress(done, total)` follows the weights.
    /// `path` is a Hugging Face model folder or a GGUF file.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let mut g = Self::load_base(path.as_ref(), options, progress)?;
        if let Some(dir) = &options.lora {
            g.model.lora = Some(gemma_model::LoraAdapter::load(dir, &g.model.config)?);
        }
        Ok(g)
    }

    fn load_base(path: &Path, options: &LoadOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        if path.is_file() {
            if !gemma_formats::is_gguf(path) {
                return Err(GemmaError::format(path, "not a GGUF file (expected a GGUF file or a Hugging Face model folder)"));
            }
            let file = gemma_formats::GgufFile::open_with(path, options.hugepages)?;
            let mut model = gemma_model::gguf::load_model(&file, options.dtype, progress)?;
            let tokenizer = gguf_tokenizer::from_gguf(&file)?;
            let file_type = file.get(keys::GENERAL_FILE_TYPE).and_then(GgufValue::as_u64).map(|v| {
                gemma_formats::file_type_name(v as u32).map_or_else(|| format!("file type {v}"), String::from)
            });
            let vision = match &options.mmproj {
                Some(p) => Some(vision::Vision::load_mmproj(p, &model, &tokenizer)?.with_image_tokens(options.image_tokens)?),
                None => None,
            };
            model.config.media_run = vision.as_ref().map_or(0, |v| v.spec.tokens_per_image);
            return Ok(Self {
                model,
                tokenizer,
                generation_config: GenerationConfig::default(),
                path: path.to_path_buf(),
                grammars: Default::default(),
                sentence: None,
                file_type,
                vision,
            });
        }
        let mut model = gemma_model::hf::load_model(path, options.dtype, progress)?;
        let tokenizer = GemmaTokenizer::from_folder(path)?;
        let generation_config = GenerationConfig::from_file(&path.join("generation_config.json"))?;
        let sentence = embed::SentenceModules::load(path)?;
        let vision = match &options.mmproj {
            Some(p) => Some(vision::Vision::load_mmproj(p, &model, &tokenizer)?),
            None => vision::Vision::load(path, model.config.hidden_size)?,
        };
        let vision = vision.map(|v| v.with_image_tokens(options.image_tokens)).transpose()?;
        // Every image's run of soft tokens is one forward step (Gemma 4's
        // 560/1120 budgets make steps longer than MAX_CHUNK).
        model.config.media_run = vision.as_ref().map_or(0, |v| v.spec.tokens_per_image);
        Ok(Self { model, tokenizer, generation_config, path: path.to_path_buf(), grammars: Default::default(), sentence, file_type: None, vision })
    }

    /// How the weights are stored, e.g. `Q4_K_M file: q4_k 49%, q8_0 31%,
    /// q6_k 20%` (the GGUF's declared type, then the parameters per type).
    pub fn weights_summary(&self) -> String {
        let mix = self.model.weights.dtype_mix();
        let total: usize = mix.iter().map(|m| m.1).sum::<usize>().max(1);
        let parts: Vec<String> = mix.iter().map(|(d, n)| format!("{d} {:.0}%", 100.0 * *n as f64 / total as f64)).collect();
        match &self.file_type {
            Some(ft) => format!("{ft} file: {}", parts.join(", ")),
            None => parts.join(", "),
        }
    }

    /// Every id that ends a turn: the config's and generation config's EOS
    /// ids, the tokenizer's `<eos>` and `<end_of_turn>`.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        for &id in self.model.config.eos_token_ids.iter().chain(&self.generation_config.eos_token_ids).chain(&self.tokenizer.stop_ids) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// This model as the drafter of `target` (speculative decoding,
    /// [`SpecMode::Draft`]), scoring ids `0..vocab` and the single
    /// characters and bytes of the vocabulary only (`0`: every id; see
    /// [`gemma_generate::speculative::DEFAULT_DRAFT_VOCAB`]): refused unless
    /// both tokenize alike (the same vocabulary size, special tokens and ids
    /// for a probe text), since drafts are ids.
    pub fn into_draft_for(self, target: &Gemma, vocab: usize) -> Result<gemma_generate::speculative::DraftModel> {
        let (a, b) = (&self.tokenizer, &target.tokenizer);
        let probe = "Speculative decoding drafts ids: 12 345 ÿ 日本語 <end_of_turn>\n\n  def f(x):\n\treturn x";
        let specials = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"];
        let same = a.vocab_size() == b.vocab_size() && specials.iter().all(|t| a.token_to_id(t) == b.token_to_id(t)) && a.encode(probe, true)? == b.encode(probe, true)?;
        if !same {
            return Err(GemmaError::invalid("draft", format!("the draft model's tokenizer ({} tokens) differs from the model's ({} tokens): drafts are token ids, so both need the same tokenizer", a.vocab_size(), b.vocab_size())));
        }
        if self.model.config.bidirectional {
            return Err(GemmaError::invalid("draft", "the draft model is an embedding model: it does not generate"));
        }
        let chars = if vocab == 0 { Vec::new() } else { self.single_character_ids(vocab) };
        Ok(gemma_generate::speculative::DraftModel::Model(std::sync::Arc::new(gemma_generate::speculative::DraftLm::new(self.model, vocab, &chars))))
    }

    /// The ids from `from` on whose piece is one character (`▁` counted as
    /// a space) or one byte (`<0x..>`): SentencePiece puts a vocabulary's
    /// alphabet at its end, and text needs it (digits, punctuation, CJK).
    fn single_character_ids(&self, from: usize) -> Vec<u32> {
        (from..self.tokenizer.vocab_size())
            .filter(|&i| {
                self.tokenizer.id_to_token(i as u32).is_some_and(|t| {
                    let byte = t.len() == 6 && t.starts_with("<0x") && t.ends_with('>');
                    byte || t.chars().count() == 1
                })
            })
            .map(|i| i as u32)
            .collect()
    }

    /// The Gemma 4 MTP assistant in `folder` (`gemma4_assistant`, Google's
    /// `gemma-4-*-assistant`) as this model's drafter ([`SpecMode::Mtp`]):
    /// refused unless it was made for a model of this shape (backbone
    /// width, vocabulary, the head geometry of the layers it reads).
    pub fn assistant_draft(&self, folder: &std::path::Path) -> Result<gemma_generate::speculative::DraftModel> {
        let a = gemma_model::Assistant::load(folder, &self.model.config, None)?;
        Ok(gemma_generate::speculative::DraftModel::Assistant(std::sync::Arc::new(a)))
    }

    /// Whether this is an embedding model (bidirectional attention, or
    /// sentence-transformers modules beside it).
    pub fn is_embedding_model(&self) -> bool {
        self.model.config.bidirectional || self.sentence.is_some()
    }

    /// The width of [`Gemma::embed`]'s vectors (before `dimensions`).
    pub fn embedding_dimensions(&self) -> usize {
        self.sentence.as_ref().map_or(self.model.config.hidden_size, |s| s.dimensions(self.model.config.hidden_size))
    }

    /// Embed each text: prompt + text tokenized as the model's tokenizer
    /// does it for sentence-transformers (its post-processor's BOS/EOS), one
    /// forward over the whole sequence, then the sentence modules (mean
    /// pooling and L2 normalization without them), then Matryoshka
    /// truncation with renormalization. Texts run in batches of up to
    /// [`EMBED_BATCH_TOKENS`] tokens.
    pub fn embed(&self, texts: &[String], opts: &EmbedOptions) -> Result<Vec<Embedding>> {
        let inputs = self.embed_inputs(texts, opts)?;
        let mut ws = Workspace::new();
        let mut out = Vec::with_capacity(inputs.len());
        for r in embed::batches(&inputs.iter().map(Vec::len).collect::<Vec<_>>(), EMBED_BATCH_TOKENS) {
            let batch: Vec<&[u32]> = inputs[r].iter().map(Vec::as_slice).collect();
            out.extend(self.embed_batch(&batch, opts.dimensions, &mut ws)?);
        }
        Ok(out)
    }

    /// The token ids [`Gemma::embed`] runs for each text (prompt, special
    /// tokens, the model's `max_seq_length` truncation); checks `dimensions`.
    pub fn embed_inputs(&self, texts: &[String], opts: &EmbedOptions) -> Result<Vec<Vec<u32>>> {
        let default = embed::SentenceModules::default();
        let st = self.sentence.as_ref().unwrap_or(&default);
        let prompt = match (&opts.prompt, &opts.prompt_name) {
            (Some(p), _) => p.clone(),
            (None, Some(name)) => st.prompts.get(name).cloned().ok_or_else(|| {
                GemmaError::invalid("prompt_name", format!("the model has no prompt '{name}' (it has: {})", st.prompts.keys().cloned().collect::<Vec<_>>().join(", ")))
            })?,
            (None, None) => st.default_prompt.as_ref().and_then(|n| st.prompts.get(n)).cloned().unwrap_or_default(),
        };
        let width = self.embedding_dimensions();
        if let Some(d) = opts.dimensions {
            if d == 0 || d > width {
                return Err(GemmaError::invalid("dimensions", format!("must be between 1 and the model's {width}, got {d}")));
            }
        }
        let context = self.model.config.max_position_embeddings;
        texts
            .iter()
            .map(|t| {
                let mut ids = self.tokenizer.encode_with_special_tokens(&format!("{prompt}{t}"))?;
                if let Some(max) = st.max_seq_length.filter(|&m| ids.len() > m) {
                    let last = ids.last().copied();
                    ids.truncate(max);
                    // Truncation keeps the closing special token, as tokenizers does.
                    if let (Some(l), Some(end)) = (last, ids.last_mut()) {
                        if self.tokenizer.is_control(l) {
                            *end = l;
                        }
                    }
                }
                if ids.is_empty() {
                    return Err(GemmaError::invalid("input", "a text has no tokens to embed"));
                }
                if ids.len() > context {
                    return Err(GemmaError::invalid("input", format!("a text has {} tokens, more than the model's context of {context}", ids.len())));
                }
                Ok(ids)
            })
            .collect()
    }

    /// Embeddings of inputs from [`Gemma::embed_inputs`], all in one forward
    /// pass (each its own segment; the projections shared).
    pub fn embed_batch(&self, inputs: &[&[u32]], dimensions: Option<usize>, ws: &mut Workspace) -> Result<Vec<Embedding>> {
        let default = embed::SentenceModules::default();
        let st = self.sentence.as_ref().unwrap_or(&default);
        let hidden = self.model.config.hidden_size;
        let states = self.model.hidden_states_batch(inputs, ws)?;
        states
            .iter()
            .zip(inputs)
            .map(|(s, ids)| {
                let mut v = st.apply(s, hidden)?;
                if let Some(d) = dimensions {
                    v.truncate(d);
                    embed::normalize(&mut v);
                }
                Ok(Embedding { values: v, tokens: ids.len() })
            })
            .collect()
    }

    /// A fresh conversation state.
    pub fn new_session(&self) -> Session {
        Session::new(&self.model)
    }

    /// Tokenize a plain prompt, BOS first as the model expects.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode_prompt(text)
    }

    /// Render a conversation with the chat template, ready for the model's turn.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.tokenizer.apply_chat_template(messages, true)?;
        // The template writes BOS itself; encode adds it only if missing.
        self.tokenizer.encode(&text, self.tokenizer.add_bos)
    }

    /// Render Hugging Face-shaped messages and `tools` with the chat
    /// template (for templates that take `tools`) and encode the prompt.
    pub fn encode_chat_json(&self, messages: &serde_json::Value, tools: Option<&serde_json::Value>) -> Result<Vec<u32>> {
        self.encode_chat_kwargs(messages, tools, &serde_json::Map::new())
    }

    /// As [`Gemma::encode_chat_json`] with extra template variables
    /// (`enable_thinking` and the like).
    pub fn encode_chat_kwargs(&self, messages: &serde_json::Value, tools: Option<&serde_json::Value>, kwargs: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<u32>> {
        let text = self.tokenizer.apply_chat_template_kwargs(messages, tools, true, kwargs)?;
        self.tokenizer.encode(&text, self.tokenizer.add_bos)
    }

    /// A request for `prompt` with the checkpoint's defaults and stop ids:
    /// the one place defaults are decided for the CLI, the library and both
    /// server APIs (sampling from `generation_config.json`, with
    /// transformers' values for fields it leaves out; greedy without it).
    pub fn request(&self, prompt: &[u32]) -> GenerateRequest {
        let mut r = GenerateRequest::new(
            prompt.to_vec(),
            self.generation_config.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            self.stop_ids(),
        );
        r.params = self.generation_config.sampling_params(0);
        r
    }

    /// Compile a grammar for this model's tokenizer (the first call indexes
    /// the vocabulary); put the result in [`GenerateRequest::constraint`].
    pub fn compile_grammar(&self, grammar: &Grammar) -> Result<Constraint> {
        if self.grammars.get().is_none() {
            let c = gemma_generate::GrammarCompiler::new(&self.tokenizer)?;
            let _ = self.grammars.set(c);
        }
        match self.grammars.get() {
            Some(c) => c.compile(grammar),
            None => Err(GemmaError::invalid("grammar", "the grammar compiler could not be built")),
        }
    }

    /// Run a request, streaming text pieces to `on_text` (return false to stop).
    pub fn generate(&self, session: &mut Session, request: &GenerateRequest, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Generation> {
        generate(&self.model, &self.tokenizer, session, request, on_text)
    }

    /// Greedy completion of a plain prompt, returned whole.
    pub fn complete(&self, prompt: &str, max_new_tokens: usize) -> Result<String> {
        let mut request = self.request(&self.encode_prompt(prompt)?);
        request.params = SamplingParams::greedy();
        request.max_new_tokens = max_new_tokens;
        Ok(self.generate(&mut self.new_session(), &request, &mut |_| true)?.text)
    }
}

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
