"""Generation backends behind one ``Generator`` interface (see ``base.Generator``).

* :class:`TransformersGenerator` - local transformers model, batched with left padding;
* :class:`OpenAIChatGenerator` - any OpenAI-compatible ``/chat/completions`` server;
* :class:`VLLMGenerator` - in-process vLLM on a GPU (constructing it without vLLM/GPU raises);
* :class:`CachedGenerator` - a crash-safe disk cache in front of any of them;
* :func:`make_generator` / :class:`GeneratorConfig` - build one from a config or a short string.
"""

from .base import GenerationError, GenerationParams, Generator, as_messages
from .cache import CachedGenerator, GenerationCache, cache_key
from .factory import GeneratorConfig, make_generator, parse_generator_spec
from .openai_backend import APIError, OpenAIChatGenerator
from .transformers_backend import TransformersGenerator
from .vllm_backend import VLLMGenerator, vllm_unavailable_reason

__all__ = [
    "APIError", "CachedGenerator", "GenerationCache", "GenerationError", "GenerationParams", "Generator", "GeneratorConfig",
    "OpenAIChatGenerator", "TransformersGenerator", "VLLMGenerator", "as_messages", "cache_key",
    "make_generator", "parse_generator_spec", "vllm_unavailable_reason",
]
