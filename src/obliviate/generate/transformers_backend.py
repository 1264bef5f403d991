"""Local generation with a transformers model: batched, left padding, KV cache, greedy or sampled."""

from __future__ import annotations

from typing import Iterator

import torch
from tqdm.auto import tqdm

from ..data.formatting import length_grouped_batches, render_chat
from .base import GenerationParams, Messages, StreamingGenerator


class TransformersGenerator(StreamingGenerator):
    """Generate with an in-memory ``(model, tokenizer)`` pair.

    Prompts are rendered with the tokenizer's chat template, sorted by length into batches of
    ``batch_size`` (little padding), left-padded so every row ends at the generation point, and
    decoded with the KV cache. Results come back in the input order.
    """

    name = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int = 16, progress: bool = False, model_id: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.model_id = model_id or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        #: how many prompts a disk cache hands over at once (results are persisted between calls)
        self.cache_chunk_size = 4 * batch_size
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; call obliviate.models.ensure_chat_template(tokenizer)")

    def __repr__(self) -> str:
        return f"TransformersGenerator(model={self.model_id!r}, batch_size={self.batch_size})"

    def _iter_generate(self, prompts: list[Messages], params: GenerationParams) -> Iterator[tuple[int, str]]:
        """Yield ``(index, completion)`` batch by batch (length-grouped order, not input order)."""
        tok = self.tokenizer
        texts = [render_chat(tok, m) for m in prompts]  # a system message fits templates without a system role
        encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        batches = length_grouped_batches([len(e) for e in encoded], self.batch_size, shuffle=False)
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        gen_kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id)
        if params.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        try:
            for bi, batch in enumerate(tqdm(batches, desc="generate", disable=not self.progress)):
                width = max(len(encoded[i]) for i in batch)
                ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                    mask[r, width - len(encoded[i]):] = 1
                if params.temperature > 0:
                    torch.manual_seed(params.seed + bi)
                with torch.no_grad():
                    gen = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs)
                for r, i in enumerate(batch):
                    yield i, tok.decode(gen[r, width:], skip_special_tokens=True).strip()
        finally:
            self.model.train(was_training)
