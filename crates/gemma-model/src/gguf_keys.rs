//! Every GGUF metadata key gemma-rs reads or writes, spelled once: the
//! reader (`gguf.rs`, `gguf_gemma3n.rs`, `gguf_gemma4.rs`) and the writer
//! (`gemma quantize`, `synth`, `merge`) both name keys through these
//! constants. The hyperparameter keys are suffixes under `{arch}.`
//! (`gemma3.context_length`); join them with [`arch_key`].

/// `{arch}.{suffix}`: a hyperparameter key of architecture `arch`.
pub fn arch_key(arch: &str, suffix: &str) -> String {
    format!("{arch}.{suffix}")
}

/// llama.cpp's architecture name.
pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
/// The model's name.
pub const GENERAL_NAME: &str = "general.name";
/// ggml's quantization format version.
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";
/// llama.cpp's file type id of the mix.
pub const GENERAL_FILE_TYPE: &str = "general.file_type";

/// Longest sequence.
pub const CONTEXT_LENGTH: &str = "context_length";
/// Residual width.
pub const EMBEDDING_LENGTH: &str = "embedding_length";
/// Number of layers.
pub const BLOCK_COUNT: &str = "block_count";
/// Feed-forward width (an integer, or one per layer).
pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
/// Query heads.
pub const HEAD_COUNT: &str = "attention.head_count";
/// Key/value heads (an integer, or one per layer).
pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
/// Key head width (of the global layers where they differ).
pub const KEY_LENGTH: &str = "attention.key_length";
/// Value head width.
pub const VALUE_LENGTH: &str = "attention.value_length";
/// Gemma 4: key head width of the sliding layers.
pub const KEY_LENGTH_SWA: &str = "attention.key_length_swa";
/// Gemma 4: value head width of the sliding layers.
pub const VALUE_LENGTH_SWA: &str = "attention.value_length_swa";
/// RMSNorm epsilon.
pub const RMS_EPSILON: &str = "attention.layer_norm_rms_epsilon";
/// Sliding-window length.
pub const SLIDING_WINDOW: &str = "attention.sliding_window";
/// Gemma 3: every n-th layer is global; Gemma 3n/4: a bool per layer.
pub const SLIDING_WINDOW_PATTERN: &str = "attention.sliding_window_pattern";
/// Gemma 3n/4: layers that reuse an earlier layer's keys and values.
pub const SHARED_KV_LAYERS: &str = "attention.shared_kv_layers";
/// The attention score scale, when a file states it.
pub const ATTENTION_SCALE: &str = "attention.scale";
/// RoPE base (of the global layers).
pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
/// RoPE base of the sliding layers.
pub const ROPE_FREQ_BASE_SWA: &str = "rope.freq_base_swa";
/// RoPE scaling kind (`linear`).
pub const ROPE_SCALING_TYPE: &str = "rope.scaling.type";
/// RoPE scaling factor.
pub const ROPE_SCALING_FACTOR: &str = "rope.scaling.factor";
/// Gemma 4: rotated width of the global layers.
pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
/// Gemma 4: rotated width of the sliding layers.
pub const ROPE_DIMENSION_COUNT_SWA: &str = "rope.dimension_count_swa";
/// Gemma 2: attention softcap.
pub const ATTN_SOFTCAP: &str = "attn_logit_softcapping";
/// Final-logit softcap.
pub const FINAL_SOFTCAP: &str = "final_logit_softcapping";
/// Gemma 3n/4: width of each layer's per-layer embedding slice.
pub const PER_LAYER_INPUT_LENGTH: &str = "embedding_length_per_layer_input";
/// Gemma 4 MoE: experts per layer.
pub const EXPERT_COUNT: &str = "expert_count";
/// Gemma 4 MoE: experts per token.
pub const EXPERT_USED_COUNT: &str = "expert_used_count";
/// Gemma 4 MoE: one expert's feed-forward width.
pub const EXPERT_FEED_FORWARD_LENGTH: &str = "expert_feed_forward_length";
/// Gemma 3n: AltUp streams.
pub const ALTUP_NUM_INPUTS: &str = "altup.num_inputs";
/// Gemma 3n: the AltUp stream layers compute on.
pub const ALTUP_ACTIVE_IDX: &str = "altup.active_idx";
/// Gemma 3n: per-layer activation sparsity as a normal quantile.
pub const ACTIVATION_SPARSITY_SCALE: &str = "activation_sparsity_scale";

/// Tokenizer model (`llama` SentencePiece, `gemma4` BPE).
pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
/// Pre-tokenizer name.
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
/// Pieces in id order.
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
/// SentencePiece scores.
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
/// Token types (1 normal, 3 control, 6 byte).
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// BPE merges (`"a b"` strings).
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
/// BOS id.
pub const BOS_TOKEN_ID: &str = "tokenizer.ggml.bos_token_id";
/// EOS id.
pub const EOS_TOKEN_ID: &str = "tokenizer.ggml.eos_token_id";
/// Unknown-token id.
pub const UNKNOWN_TOKEN_ID: &str = "tokenizer.ggml.unknown_token_id";
/// Padding id.
pub const PADDING_TOKEN_ID: &str = "tokenizer.ggml.padding_token_id";
/// Whether BOS is added.
pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
/// Whether EOS is added.
pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
/// Whether a space is prepended.
pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
/// The chat template.
pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// `adapter` in a LoRA file.
pub const GENERAL_TYPE: &str = "general.type";
/// `lora`.
pub const ADAPTER_TYPE: &str = "adapter.type";
/// The LoRA alpha llama.cpp scales by (`alpha / r`).
pub const ADAPTER_LORA_ALPHA: &str = "adapter.lora.alpha";
