"""Type stubs of gemma_rs (the native module gemma_rs._native)."""
from os import PathLike
from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Union, overload, Tuple

from typing_extensions import TypedDict, Unpack

import numpy as np
import numpy.typing as npt

__version__: str

Message = Mapping[str, Any]

class SamplingKwargs(TypedDict, total=False):
    """Sampling keywords; unset ones take the model's generation_config."""
    max_tokens: int
    temperature: float
    """0 is greedy."""
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    stop: Union[str, Sequence[str]]
    seed: int
    """Without one, each call draws a fresh seed."""

class GenerateKwargs(SamplingKwargs, total=False):
    """Sampling keywords and at most one output constraint."""
    json_schema: Union[str, Mapping[str, Any]]
    regex: str
    grammar: str
    """A Lark grammar."""

class TextStream(Iterator[Any]):
    """A generation as it is made: text pieces (`generate(stream=True)`) or
    OpenAI `chat.completion.chunk` dicts (`create_chat_completion(stream=True)`).
    Leaving the loop early (or `close()`) cancels the rest."""
    def __iter__(self) -> "TextStream": ...
    def __next__(self) -> Any: ...
    def close(self) -> None:
        """Stop generating; the rest is cancelled."""

class Gemma:
    """A Gemma model with its continuous-batching engine. Thread-safe:
    generations from several threads on one object share batched steps,
    each getting exactly what it would get alone."""

    def __init__(
        self,
        model: Optional[Union[str, "PathLike[str]"]] = None,
        *,
        threads: Optional[int] = None,
        dtype: Optional[str] = None,
        lora: Optional[Union[str, "PathLike[str]"]] = None,
        kv_type: Optional[Literal["f32", "f16", "q8_0"]] = None,
        ctx: Optional[int] = None,
    ) -> None:
        """Load a model: None is the default model (Gemma 3 270M, fetched on
        first use), else a GGUF file, a Hugging Face folder or repo id, or a
        cached name (the CLI's --model). `threads`: compute threads (the first
        model of a process sets them); `dtype`: convert the weights at load
        (`q4_k`, `q8_0`, `bf16`, ...); `lora`: a PEFT adapter folder;
        `kv_type`: how the KV cache stores values; `ctx`: cap the context.
        Raises FileNotFoundError for a missing model, ValueError for a bad
        argument or file."""
    @property
    def path(self) -> str:
        """Where the model was loaded from."""
    @property
    def n_ctx(self) -> int:
        """Context length in tokens."""
    @property
    def n_vocab(self) -> int:
        """Vocabulary size."""
    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        """Token ids of `text` (with <bos> first when `add_bos`)."""
    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """The text of `ids` (control tokens dropped unless `special`)."""
    @overload
    def generate(self, prompt: Union[str, Sequence[int]], *, stream: Literal[False] = False, **kwargs: Unpack[GenerateKwargs]) -> str: ...
    @overload
    def generate(self, prompt: Union[str, Sequence[int]], *, stream: Literal[True], **kwargs: Unpack[GenerateKwargs]) -> TextStream: ...
    def generate(self, prompt: Union[str, Sequence[int]], *, stream: bool = False, **kwargs: Unpack[GenerateKwargs]) -> Union[str, TextStream]:
        """Complete `prompt` (text, given <bos>, or token ids): the text, or
        with stream=True an iterator of text pieces (GenerateKwargs: sampling
        and at most one constraint). The GIL is released while the engine
        works; Ctrl-C stops between tokens with KeyboardInterrupt; an unknown
        keyword is a TypeError."""
    def create_chat_completion(
        self,
        messages: Sequence[Message],
        *,
        tools: Optional[Sequence[Mapping[str, Any]]] = None,
        tool_choice: Optional[Union[Literal["auto", "none", "required"], Mapping[str, Any]]] = None,
        parallel_tool_calls: Optional[bool] = None,
        response_format: Optional[Mapping[str, Any]] = None,
        stream: bool = False,
        **kwargs: Unpack[SamplingKwargs],
    ) -> Union[Dict[str, Any], TextStream]:
        """An OpenAI-shaped chat completion dict (or, with stream=True, an
        iterator of chat.completion.chunk dicts) for `messages` rendered as
        `gemma serve` renders them. With `tools`, calls are written in the
        model's convention, constrained to the tools' schemas (tool_choice
        "required" or a named function forces one) and returned as
        message.tool_calls. response_format {"type": "json_object"} or
        {"type": "json_schema", "json_schema": {"schema": ...}} constrains a
        text answer."""
    chat = create_chat_completion
    def embed(self, texts: Union[str, Sequence[str]], dimensions: Optional[int] = None, prompt_name: Optional[str] = None) -> npt.NDArray[np.float32]:
        """Embeddings (n, d) float32 of an embedding model (EmbeddingGemma);
        `dimensions` truncates and renormalizes (Matryoshka), `prompt_name`
        picks one of the model's prompts (e.g. "query")."""
    def logits(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Logits (len(ids), n_vocab) float32 of every position of `ids`."""
    def score(self, context: str, continuations: Sequence[str]) -> List[Tuple[float, bool]]:
        """(log-likelihood, is_greedy) of each continuation after `context`, as
        lm-eval's loglikelihood requests compute them (the context's trailing
        whitespace moves to the continuation; <bos> first); batched."""
    def perplexity(self, text: str, ctx: int = 512) -> Dict[str, float]:
        """{"ppl", "nll", "tokens"} of `text` as `gemma perplexity --file`
        computes it (windows of `ctx` tokens after <bos>)."""

def quantize(src: str, dst: Union[str, "PathLike[str]"], type: str = "q4_k_m") -> Dict[str, Any]:
    """Write `dst`, a GGUF of the model at `src` (folder, GGUF or repo id)
    quantized to `type` (q4_k_m, q8_0, q4_k, bf16, ...), as `gemma quantize`;
    returns {"tensors", "bytes", "types": {type: count}}."""

def finetune(
    model: Union[Gemma, str],
    data: Union[str, "PathLike[str]"],
    out: Union[str, "PathLike[str]"],
    *,
    eval_data: Optional[Union[str, "PathLike[str]"]] = None,
    learning_rate: float = 2e-4,
    num_train_epochs: int = 1,
    max_steps: Optional[int] = None,
    per_device_train_batch_size: int = 8,
    gradient_accumulation_steps: int = 1,
    warmup_steps: int = 0,
    lr_scheduler_type: Literal["linear", "cosine", "constant"] = "linear",
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    seed: int = 42,
    r: int = 16,
    lora_alpha: float = 32.0,
    lora_dropout: float = 0.0,
    target_modules: Optional[Union[str, Sequence[str]]] = None,
    use_rslora: bool = False,
    max_length: Optional[int] = None,
    packing: bool = False,
    gradient_checkpointing: bool = False,
    eval_steps: Optional[int] = None,
    save_steps: Optional[int] = None,
    loss: Literal["auto", "all", "completion-only", "assistant-only"] = "auto",
    init_lora: Optional[Union[str, "PathLike[str]"]] = None,
    resume_from_checkpoint: Optional[Union[str, "PathLike[str]"]] = None,
    callback: Optional[Callable[[Dict[str, Any]], Optional[bool]]] = None,
) -> Dict[str, Any]:
    """Train a LoRA adapter (QLoRA on a quantized model) of `model` on `data`
    (JSONL: text, prompt/completion or messages per line) into the PEFT folder
    `out`, as `gemma finetune` does (same adapter for the same settings).
    Keywords are transformers' TrainingArguments and PEFT's LoraConfig names
    (target_modules: "all-linear" or module names). `callback(dict)` hears each
    step (step, total_steps, loss, learning_rate, grad_norm, tokens_per_second,
    epoch), evaluation (eval_loss) and checkpoint; returning False stops the run
    (RuntimeError, no adapter written), as does Ctrl-C (KeyboardInterrupt).
    Returns a summary (steps, seconds, tokens_per_second, first_loss, last_loss,
    eval_loss, examples, trainable_parameters)."""
