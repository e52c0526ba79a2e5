//! Text Generation Inference routes' types (`/generate`,
//! `/generate_stream`, `/`, `/info`), the tokenizer routes' (`/tokenize`,
//! `/detokenize`, `/tokenizer_info`) and TGI's error shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /generate`, `/generate_stream` and `/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GenerateRequest {
    /// The prompt (BOS is added).
    pub inputs: String,
    /// Generation parameters.
    #[serde(default)]
    pub parameters: Option<GenerateParameters>,
    /// `POST /` only: stream as `/generate_stream` does.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// TGI's generation parameters. Sampling happens when `do_sample` is true
/// or any of `temperature`, `top_k`, `top_p` is set; otherwise greedy.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct GenerateParameters {
    /// Only 1 is supported.
    #[schema(minimum = 1, maximum = 1)]
    pub best_of: Option<u64>,
    /// Sample.
    pub do_sample: Option<bool>,
    /// Strictly positive (default 1 when sampling).
    #[schema(exclusive_minimum = 0)]
    pub temperature: Option<f64>,
    /// Strictly positive.
    #[schema(minimum = 1)]
    pub top_k: Option<u64>,
    /// In (0, 1).
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub top_p: Option<f64>,
    /// Only 1 (off) is supported.
    #[schema(minimum = 1, maximum = 1)]
    pub typical_p: Option<f64>,
    /// Most tokens to generate (default 100).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<u64>,
    /// Strictly positive; 1 is off.
    #[schema(exclusive_minimum = 0)]
    pub repetition_penalty: Option<f64>,
    /// Penalty per occurrence in the generated tokens.
    pub frequency_penalty: Option<f64>,
    /// Up to 4 non-empty stop sequences.
    #[schema(max_items = 4)]
    pub stop: Option<Vec<String>>,
    /// Keep BOS and the last `truncate` prompt tokens.
    #[schema(minimum = 1)]
    pub truncate: Option<u64>,
    /// Not supported (must be false).
    pub watermark: Option<bool>,
    /// Return `details`: tokens, log-probabilities, finish reason.
    pub details: Option<bool>,
    /// With `details`: the prompt's tokens and log-probabilities (not when streaming).
    pub decoder_input_details: Option<bool>,
    /// Prepend the prompt to `generated_text`.
    pub return_full_text: Option<bool>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Alternatives per token (at most 5).
    #[schema(maximum = 5)]
    pub top_n_tokens: Option<u64>,
    /// `{"type": "json", "value": SCHEMA}` or `{"type": "regex", "value": RE}`.
    #[schema(value_type = Option<Grammar>)]
    pub grammar: Option<Value>,
    /// A loaded adapter's name (the base model's id or empty: the base model).
    pub adapter_id: Option<String>,
    /// gemma-rs: speculative decoding for this request (`false`: off even
    /// when the server drafts; `true`: prompt lookup even when it does
    /// not). The output is the same either way.
    pub speculative: Option<bool>,
    /// Generate to `max_new_tokens` whatever the model says (vLLM's name).
    pub ignore_eos: Option<bool>,
}

/// A TGI grammar.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // read from the raw JSON by the grammar compiler
pub struct Grammar {
    /// `json` or `regex`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON Schema (json) or a regular expression (regex).
    pub value: Value,
}

/// A token as TGI reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Token {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub text: String,
    /// Its log-probability (null where not computed).
    pub logprob: Option<f32>,
    /// Whether it is a control token.
    pub special: bool,
}

/// `/generate`'s answer (`/` answers a list of one).
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    /// The text (after the prompt with `return_full_text`).
    pub generated_text: String,
    /// With `details`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

/// What `details` adds.
#[derive(Debug, Serialize, ToSchema)]
pub struct Details {
    /// `length`, `eos_token` or `stop_sequence`.
    pub finish_reason: String,
    /// Tokens generated (the stopping end-of-turn token included).
    pub generated_tokens: usize,
    /// The seed, when sampling.
    pub seed: Option<u64>,
    /// The prompt's tokens (with `decoder_input_details`).
    pub prefill: Vec<Token>,
    /// The generated tokens.
    pub tokens: Vec<Token>,
    /// Always null.
    pub best_of_sequences: Option<Vec<Value>>,
    /// Alternatives per token (with `top_n_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_tokens: Option<Vec<Vec<Token>>>,
}

/// One server-sent event of `/generate_stream`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamResponse {
    /// 1, 2, … per token.
    pub index: usize,
    /// The token.
    pub token: Token,
    /// Its alternatives (with `top_n_tokens`).
    pub top_tokens: Option<Vec<Token>>,
    /// The whole text, in the last event only.
    pub generated_text: Option<String>,
    /// In the last event only.
    pub details: Option<StreamDetails>,
}

/// The last stream event's details.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamDetails {
    /// `length`, `eos_token` or `stop_sequence`.
    pub finish_reason: String,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Prompt tokens.
    pub input_length: usize,
    /// The seed, when sampling.
    pub seed: Option<u64>,
}

/// `GET /info`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    /// The served model's id.
    pub model_id: String,
    /// Always null.
    pub model_sha: Option<String>,
    /// The weights' type.
    pub model_dtype: String,
    /// `cpu`.
    pub model_device_type: String,
    /// `text-generation`.
    pub model_pipeline_tag: String,
    /// Running plus queued requests at most.
    pub max_concurrent_requests: usize,
    /// 1.
    pub max_best_of: usize,
    /// Most stop sequences per request.
    pub max_stop_sequences: usize,
    /// Longest prompt.
    pub max_input_tokens: usize,
    /// Longest prompt plus generation.
    pub max_total_tokens: usize,
    /// Most sequences per step.
    pub max_batch_size: usize,
    /// Default `max_tokens` of a chat request.
    pub max_new_tokens: usize,
    /// Prompt tokens computed per step.
    pub prefill_chunk: usize,
    /// Most instances per Vertex AI request.
    pub max_client_batch_size: usize,
    /// 1.
    pub validation_workers: usize,
    /// Most `top_n_tokens`.
    pub max_top_n_tokens: usize,
    /// `gemma-rs`.
    pub router: String,
    /// The server's version.
    pub version: String,
    /// Always null.
    pub sha: Option<String>,
    /// Always null.
    pub docker_label: Option<String>,
}

/// A TGI-shaped error (422 for an invalid request).
#[derive(Debug, Serialize, ToSchema)]
pub struct TgiError {
    /// A sentence naming the problem.
    pub error: String,
    /// `validation`, `overloaded`, `unavailable`, `authentication`, `not_found`, `generation`.
    pub error_type: String,
}

/// `POST /tokenize`: vLLM's `prompt` or `messages`, or TGI's `inputs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenizeRequest {
    /// Text to tokenize (vLLM).
    pub prompt: Option<String>,
    /// A conversation to render with the chat template, then tokenize (vLLM).
    pub messages: Option<Vec<SimpleMessage>>,
    /// Add BOS (default true).
    pub add_special_tokens: Option<bool>,
    /// End `messages` with the model turn's opening (default true).
    pub add_generation_prompt: Option<bool>,
    /// Text to tokenize, TGI's way: the answer is a list of tokens with offsets.
    pub inputs: Option<String>,
}

/// A message of a `/tokenize` conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SimpleMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// `/tokenize`'s answer: vLLM's object, or TGI's list for `inputs`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TokenizeResponse {
    /// vLLM.
    Ids(TokenIds),
    /// TGI.
    Spans(Vec<TokenSpan>),
}

/// vLLM's tokenize answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIds {
    /// The ids.
    pub tokens: Vec<u32>,
    /// How many.
    pub count: usize,
    /// The longest sequence the server takes.
    pub max_model_len: usize,
}

/// A token with its byte span in `inputs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenSpan {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub text: String,
    /// First byte.
    pub start: usize,
    /// End byte (exclusive).
    pub stop: usize,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DetokenizeRequest {
    /// Token ids of this model.
    #[schema(value_type = Vec<u32>)]
    pub tokens: Vec<Value>,
}

/// `/detokenize`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetokenizeResponse {
    /// The text (control tokens kept).
    pub prompt: String,
}

/// `GET /tokenizer_info` (what lm-eval's remote tokenizer reads).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenizerInfo {
    /// `GemmaTokenizer`.
    pub tokenizer_class: String,
    /// `<bos>`.
    pub bos_token: String,
    /// Its id.
    pub bos_token_id: u32,
    /// The end-of-sequence token.
    pub eos_token: String,
    /// Its id.
    pub eos_token_id: Option<u32>,
    /// `<pad>` when the vocabulary has it at id 0.
    pub pad_token: Option<String>,
    /// Its id.
    pub pad_token_id: Option<u32>,
    /// Whether prompts start with BOS.
    pub add_bos_token: bool,
    /// false.
    pub add_eos_token: bool,
    /// The Jinja chat template.
    pub chat_template: String,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// The longest sequence the server takes.
    pub model_max_length: usize,
    /// Ids that end generation.
    pub stop_token_ids: Vec<u32>,
}
