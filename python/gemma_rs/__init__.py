"""gemma-rs for Python: Google's Gemma models on a native Rust engine.

    >>> from gemma_rs import Gemma
    >>> g = Gemma()                      # the default model, fetched on first use
    >>> g.generate("The capital of France is", max_tokens=8, temperature=0)

One `Gemma` object may be used from many threads: their generations are
batched together by the engine. See docs/PYTHON.md.
"""
from ._native import Gemma as _NativeGemma
from ._native import TextStream, __version__, finetune, quantize


class Gemma(_NativeGemma):
    __doc__ = _NativeGemma.__doc__
    # The short name llama-cpp-python users also know from other libraries.
    chat = _NativeGemma.create_chat_completion

__all__ = ["Gemma", "TextStream", "__version__", "finetune", "quantize"]
