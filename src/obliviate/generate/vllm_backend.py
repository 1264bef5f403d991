"""In-process generation with vLLM (``vllm.LLM``): continuous batching and paged attention on a GPU.

The module imports without vLLM; constructing :class:`VLLMGenerator` raises a ``RuntimeError``
that says what is missing (the ``vllm`` package, or a CUDA GPU).
"""

from __future__ import annotations

import importlib.util
from typing import Iterator

from .base import GenerationParams, Messages, StreamingGenerator


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot run here (no package / no CUDA GPU), or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return ("the 'vllm' backend needs the vllm package: `pip install 'obliviate[vllm]'` (a CUDA build of "
                "torch matching vllm); or use backend 'transformers' or 'openai' (e.g. a `vllm serve` endpoint)")
    import torch

    if not torch.cuda.is_available():
        return ("the 'vllm' backend needs a CUDA GPU and torch.cuda.is_available() is False here; "
                "use backend 'transformers' (CPU) or 'openai' pointed at a remote vLLM server")
    return None


class VLLMGenerator(StreamingGenerator):
    """Generate with an in-process ``vllm.LLM(model, **engine_kwargs)``.

    Prompts go through ``LLM.chat`` (the model's chat template, generation prompt added) with
    ``SamplingParams(max_tokens, temperature, top_p, seed)``; a per-request seed makes sampled
    outputs reproducible independently of batch composition. Prompts are submitted in chunks of
    ``chunk_size`` so that a disk cache can persist results between chunks.
    """

    name = "vllm"

    def __init__(self, model: str, *, chunk_size: int = 512, progress: bool = False, **engine_kwargs):
        reason = vllm_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        from vllm import LLM

        self.model_id = str(model)
        self.chunk_size = int(chunk_size)
        self.cache_chunk_size = self.chunk_size
        self.progress = progress
        self.engine_kwargs = dict(engine_kwargs)
        self.llm = LLM(model=self.model_id, **self.engine_kwargs)

    def __repr__(self) -> str:
        return f"VLLMGenerator(model={self.model_id!r}, engine_kwargs={self.engine_kwargs!r})"

    def _sampling(self, params: GenerationParams):
        from vllm import SamplingParams

        if params.temperature > 0:
            return SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                  top_p=params.top_p, seed=params.seed)
        return SamplingParams(max_tokens=params.max_new_tokens, temperature=0.0, seed=params.seed)

    def _iter_generate(self, prompts: list[Messages], params: GenerationParams) -> Iterator[tuple[int, str]]:
        """Yield ``(index, completion)`` chunk by chunk, in order."""
        sp = self._sampling(params)
        for start in range(0, len(prompts), self.chunk_size):
            chunk = prompts[start:start + self.chunk_size]
            outs = self.llm.chat(chunk, sampling_params=sp, use_tqdm=self.progress, add_generation_prompt=True)
            for j, o in enumerate(outs):
                yield start + j, o.outputs[0].text.strip()

