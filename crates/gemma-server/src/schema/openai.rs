//! OpenAI routes' types: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/models`, `/v1/adapters`. Fields a handler reads
//! through the raw JSON as well (messages and tools go to the chat template
//! as sent; `response_format` to the grammar compiler) are typed here for
//! validation and the schema.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Sampling, limits and stops shared by chat and text completions.
/// Parameters left out take the model's `generation_config.json`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SamplingParams {
    /// The base model's id or a loaded adapter's name (any other name means the base model).
    pub model: Option<String>,
    /// Most tokens to generate (completions: 16; chat: the server's `--max-new-tokens`).
    pub max_tokens: Option<u64>,
    /// Chat's newer name for `max_tokens` (wins when both are set).
    pub max_completion_tokens: Option<u64>,
    /// 0 is greedy.
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens (0: all).
    pub top_k: Option<u64>,
    /// Seed of choice 0; choice i uses `seed + i`.
    pub seed: Option<i64>,
    /// Penalty on tokens already generated.
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    /// Penalty per occurrence in the generated tokens.
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// Up to 16 non-empty stop strings (not included in the output).
    pub stop: Option<Stop>,
    /// Choices to generate.
    #[schema(minimum = 1, maximum = 8)]
    pub n: Option<u64>,
    /// Answer with server-sent events (`text/event-stream`), ending with `data: [DONE]`.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Constrain the output: `text`, `json_object` or `json_schema`.
    #[schema(value_type = Option<ResponseFormat>)]
    pub response_format: Option<Value>,
    /// OpenAI's Predicted Outputs: text the answer is expected to repeat
    /// (a file being edited). Drafted from and verified in one forward per
    /// step; the answer is the same as without it, only faster where it
    /// follows the prediction.
    pub prediction: Option<Prediction>,
    /// gemma-rs: speculative decoding for this request (`false`: off even
    /// when the server drafts; `true`: prompt-lookup drafts even when it
    /// does not). The output is the same either way.
    pub speculative: Option<bool>,
}

/// `prediction`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Prediction {
    /// Always `content`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The expected text, or a list of `{"type": "text", "text": …}` parts.
    #[schema(value_type = Object)]
    pub content: Value,
}

impl Prediction {
    /// The expected text, or why the field is malformed.
    pub fn text(&self) -> Result<String, String> {
        if self.kind != "content" {
            return Err(format!("prediction.type must be \"content\", got {:?}", self.kind));
        }
        match &self.content {
            Value::String(s) => Ok(s.clone()),
            Value::Array(parts) => parts
                .iter()
                .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => Ok(t.to_string()),
                    _ => Err("prediction.content parts must be {\"type\": \"text\", \"text\": …}".to_string()),
                })
                .collect(),
            _ => Err("prediction.content must be a string or a list of text parts".into()),
        }
    }
}

/// One stop string or several.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "must be a string or a list of strings")]
pub enum Stop {
    /// One string.
    One(String),
    /// Several strings.
    Many(Vec<String>),
}

impl Stop {
    /// The strings.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and `usage: null` on the others).
    pub include_usage: Option<bool>,
}

/// `response_format`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // read from the raw JSON by the grammar compiler
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: ResponseFormatType,
    /// With `json_schema`.
    pub json_schema: Option<JsonSchemaFormat>,
}

/// The kinds of `response_format`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatType {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching `json_schema.schema`.
    JsonSchema,
}

/// A named JSON Schema for `response_format`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // read from the raw JSON by the grammar compiler
pub struct JsonSchemaFormat {
    /// The schema's name.
    pub name: Option<String>,
    /// The JSON Schema.
    #[schema(value_type = Object)]
    pub schema: Option<Value>,
    /// Refuse schema features that cannot be enforced exactly.
    pub strict: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// The conversation, rendered by the model's chat template.
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessage>,
    /// Functions the model may call.
    #[serde(default)]
    pub tools: Option<Vec<ToolDef>>,
    /// `none`, `auto`, `required` or `{"type": "function", "function": {"name": …}}`.
    #[serde(default)]
    #[schema(value_type = Option<ToolChoice>)]
    pub tool_choice: Option<Value>,
    /// Return each token's log-probability.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Alternatives per token (needs `logprobs`).
    #[serde(default)]
    #[schema(maximum = 20)]
    pub top_logprobs: Option<u64>,
    /// Thinking models (Gemma 4): `none`/`minimal` turn thinking off, `low`/`medium`/`high` on.
    #[serde(default)]
    #[schema(value_type = Option<ReasoningEffort>)]
    pub reasoning_effort: Option<Value>,
    /// Allow several calls in one answer (default true).
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Extra chat-template variables, e.g. `{"enable_thinking": false}`.
    #[serde(default)]
    pub chat_template_kwargs: Option<Map<String, Value>>,
    /// Sampling and limits.
    #[serde(flatten)]
    pub sampling: SamplingParams,
}

/// `reasoning_effort` levels.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // read from the raw JSON (crate::reasoning)
pub enum ReasoningEffort {
    /// Off.
    None,
    /// Off.
    Minimal,
    /// On.
    Low,
    /// On.
    Medium,
    /// On.
    High,
}

/// A chat message as the chat template reads it.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the template renders the raw JSON message
pub struct ChatMessage {
    /// Who speaks (the chat template decides which roles it takes).
    #[schema(value_type = Role)]
    pub role: String,
    /// The text, or a list of text parts (null for an assistant turn that only calls tools).
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Calls an assistant turn made.
    #[serde(default)]
    pub tool_calls: Option<Vec<HistoryToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// The function a `tool` message comes from.
    #[serde(default)]
    pub name: Option<String>,
}

/// The roles Gemma's chat templates know.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // documentation: `ChatMessage::role` is any string the template takes
pub enum Role {
    /// Instructions (Gemma 1–3 fold it into the first user turn).
    System,
    /// Instructions (FunctionGemma, Gemma 4).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One server-sent event, as a stream's `schema` describes each event:
/// `data` holds the JSON of a `CompletionChunk` (OpenAI routes) or a
/// `StreamResponse` (TGI routes); OpenAI streams end with `data: [DONE]`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of what axum's SSE writer sends
pub struct ServerSentEvent {
    /// The payload.
    pub data: String,
    /// `message`.
    pub event: Option<String>,
}

/// A message's content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged, expecting = "must be a string or a list of text parts")]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Parts; only `{"type": "text", "text": …}` is supported.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the template renders the raw JSON message
pub struct ContentPart {
    /// `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// A function the model may call.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the tool list is read from the raw JSON (crate::tools)
pub struct ToolDef {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

/// A function's name, description and JSON Schema parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the tool list is read from the raw JSON (crate::tools)
pub struct FunctionDef {
    /// 1 to 64 letters, digits, `_` and `-`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON Schema of its arguments.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Refuse schema features that cannot be enforced exactly.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `tool_choice`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // read from the raw JSON (crate::tools)
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(ToolChoiceMode),
    /// One named function.
    Named {
        /// `function`.
        #[serde(rename = "type")]
        kind: String,
        /// Its name.
        function: NamedFunction,
    },
}

/// `tool_choice` modes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // read from the raw JSON (crate::tools)
pub enum ToolChoiceMode {
    /// Never call.
    None,
    /// The model decides.
    Auto,
    /// Call at least one.
    Required,
}

/// A function named by `tool_choice`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // read from the raw JSON (crate::tools)
pub struct NamedFunction {
    /// Its name.
    pub name: String,
}

/// A call in the conversation sent back (what `crate::tools` reads: an
/// `id` and `function.name`; missing arguments mean `{}`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the template renders the raw JSON message
pub struct HistoryToolCall {
    /// The call's id.
    pub id: String,
    /// `function`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The function and its arguments.
    pub function: HistoryFunction,
}

/// A called function in the conversation sent back.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the template renders the raw JSON message
pub struct HistoryFunction {
    /// Its name.
    pub name: String,
    /// The arguments: a JSON string (OpenAI) or an object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
}

/// A call the model made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolCall {
    /// The call's id (a `tool` message answers it by `tool_call_id`).
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its JSON arguments.
    pub function: FunctionCall,
}

/// A called function.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionCall {
    /// Its name.
    pub name: String,
    /// The arguments as a JSON string.
    pub arguments: String,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// The prompt(s): text, texts, token ids or lists of token ids.
    #[schema(value_type = Prompt)]
    pub prompt: Value,
    /// Return the prompt before the completion (with `logprobs`: scored).
    #[serde(default)]
    pub echo: Option<bool>,
    /// Prepend BOS when the prompt lacks it (vLLM's name).
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    /// Alternatives per token (0 to 20); set, it returns log-probabilities.
    #[serde(default)]
    #[schema(maximum = 20)]
    pub logprobs: Option<u64>,
    /// Sampling and limits.
    #[serde(flatten)]
    pub sampling: SamplingParams,
}

/// A completion prompt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation of the prompt shapes `completions.rs` parses
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts (one choice each).
    Texts(Vec<String>),
    /// One prompt as token ids.
    Ids(Vec<u32>),
    /// Several prompts as token ids.
    IdLists(Vec<Vec<u32>>),
}

/// Token counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    /// Prompt tokens (each prompt once, whatever `n`).
    pub prompt_tokens: usize,
    /// Generated tokens, all choices.
    pub completion_tokens: usize,
    /// The sum.
    pub total_tokens: usize,
    /// How the prompt tokens were processed.
    pub prompt_tokens_details: PromptTokensDetails,
    /// How the completion tokens were produced.
    pub completion_tokens_details: CompletionTokensDetails,
}

/// OpenAI's `usage.completion_tokens_details`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CompletionTokensDetails {
    /// Draft tokens (from the prediction or prompt lookup) the model chose too.
    pub accepted_prediction_tokens: usize,
    /// Draft tokens verified and not taken (computed, not output).
    pub rejected_prediction_tokens: usize,
    /// Always 0 here (thinking tokens are part of the completion).
    pub reasoning_tokens: usize,
}

/// OpenAI's `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose keys and values were reused from an earlier request (prefix cache).
    pub cached_tokens: usize,
}

impl Usage {
    /// Counts with their total.
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }

    /// With the drafted and accepted counts of speculative decoding.
    pub fn with_drafts(mut self, drafted: usize, accepted: usize) -> Self {
        self.completion_tokens_details.accepted_prediction_tokens = accepted;
        self.completion_tokens_details.rejected_prediction_tokens = drafted.saturating_sub(accepted);
        self
    }
}

/// A chat or text completion (not streamed).
#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionResponse {
    /// `chatcmpl-N` or `cmpl-N`.
    pub id: String,
    /// `chat.completion` or `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The server's model id.
    pub model: String,
    /// Always null.
    pub system_fingerprint: Option<String>,
    /// The choices, by `index`.
    #[schema(value_type = Vec<Choice>)]
    pub choices: Vec<Value>,
    /// Token counts.
    pub usage: Usage,
}

/// A choice: chat (`message`) or text (`text`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub enum Choice {
    /// A chat choice.
    Chat(ChatChoice),
    /// A text choice.
    Text(TextChoice),
}

/// A chat choice.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub struct ChatChoice {
    /// Its position.
    pub index: usize,
    /// The answer.
    pub message: ResponseMessage,
    /// Per-token log-probabilities (with `logprobs`).
    pub logprobs: Option<ChatLogprobs>,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: String,
}

/// The assistant's answer.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub struct ResponseMessage {
    /// `assistant`.
    pub role: String,
    /// The text (null when the answer is tool calls).
    pub content: Option<String>,
    /// The calls, when the answer is calls.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The thought (thinking models).
    pub reasoning_content: Option<String>,
}

/// Chat log-probabilities.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
}

/// A token's log-probability and its alternatives.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position.
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// A text completion choice.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub struct TextChoice {
    /// Its position (prompt-major, then `n`).
    pub index: usize,
    /// The completion (after the prompt, with `echo`).
    pub text: String,
    /// Legacy log-probabilities (with `logprobs`).
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// Legacy completion log-probabilities, one entry per token.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the choices `openai.rs` builds
pub struct CompletionLogprobs {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Their log-probabilities (null for the first prompt token).
    pub token_logprobs: Vec<Option<f32>>,
    /// Alternatives by token text.
    pub top_logprobs: Vec<Option<std::collections::BTreeMap<String, f32>>>,
    /// Byte offset of each token in the text.
    pub text_offset: Vec<usize>,
}

/// One server-sent event of a streamed completion (`data: {…}`); the
/// stream ends with `data: [DONE]`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documentation of the chunks `openai.rs` streams
pub struct CompletionChunk {
    /// Same for every chunk of a response.
    pub id: String,
    /// `chat.completion.chunk` or `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The server's model id.
    pub model: String,
    /// One choice's delta (chat: `delta` with `role`, `content`, `reasoning_content` or `tool_calls`; text: `text`).
    #[schema(value_type = Vec<Object>)]
    pub choices: Vec<Value>,
    /// With `stream_options.include_usage`: null, then counts in the last chunk.
    pub usage: Option<Usage>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// A text, texts, token ids or lists of token ids (at most 2048 inputs).
    #[schema(value_type = EmbeddingInput)]
    pub input: Value,
    /// Matryoshka truncation (renormalized).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub dimensions: Option<u64>,
    /// `float` (default) or `base64` (little-endian f32).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// One of the model's prompts (EmbeddingGemma: `query`, `document`, …).
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Ignored (the server's model).
    #[serde(default)]
    pub model: Option<String>,
}

/// The input shapes of `/v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation of the shapes `embeddings.rs` parses
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One input as token ids.
    Ids(Vec<u32>),
    /// Several inputs as token ids.
    IdLists(Vec<Vec<u32>>),
}

/// How embeddings are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase", expecting = "must be one of float, base64")]
pub enum EncodingFormat {
    /// A list of numbers.
    Float,
    /// Base64 of little-endian f32.
    Base64,
}

/// `/v1/embeddings`' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    pub object: String,
    /// One per input, in order.
    pub data: Vec<Embedding>,
    /// The server's model id.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

/// One embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct Embedding {
    /// `embedding`.
    pub object: String,
    /// The input's position.
    pub index: usize,
    /// The vector.
    pub embedding: EmbeddingVector,
}

/// An embedding vector as numbers or base64.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `float`.
    Float(Vec<f32>),
    /// `base64`.
    Base64(String),
}

/// Tokens embedded.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    /// Input tokens.
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The base model, then each loaded adapter.
    pub data: Vec<ModelCard>,
}

/// A model (or an adapter over the base model).
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    /// What requests name as `model`.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Always 0.
    pub created: u64,
    /// `gemma-rs`.
    pub owned_by: String,
    /// The base model, for an adapter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What prompts may hold: `["text"]`, or `["text", "image"]` for a
    /// model with a vision tower (image_url content parts).
    pub input_modalities: Vec<String>,
}

/// `POST /v1/adapters`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AdapterCreate {
    /// 1 to 64 letters, digits, `_`, `-` or `.`.
    pub name: String,
    /// The PEFT adapter folder, on the server.
    pub path: String,
}

/// `GET /v1/adapters`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdapterList {
    /// `list`.
    pub object: String,
    /// The loaded adapters, by name.
    pub data: Vec<AdapterCard>,
}

/// A loaded adapter.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdapterCard {
    /// Its name (requests name it as `model` or TGI `adapter_id`).
    pub id: String,
    /// `adapter`.
    pub object: String,
    /// Where it was loaded from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The base model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// True in the answer to `DELETE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// An OpenAI-shaped error.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiError {
    /// What went wrong.
    pub error: OpenAiErrorBody,
}

/// The error's fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    /// A sentence naming the problem.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_exceeded` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always null.
    pub param: Option<String>,
    /// Always null.
    pub code: Option<String>,
}
