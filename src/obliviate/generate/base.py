"""The one ``Generator`` interface: batched chat prompts in, texts out."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence, Union

Messages = list[dict]
Prompt = Union[str, Messages]


class GenerationError(RuntimeError):
    """A generation backend failed for good: the endpoint refused the connection, answered an HTTP error
    after the retries, sent a reply that is not a chat completion, or ran past its deadline.

    The message names the endpoint (credentials redacted) and what to do; ``obliviate``'s command
    line prints it as one line and exits 2.
    """


def as_messages(prompt: Prompt, system: str | None = None) -> Messages:
    """A plain string becomes one user turn; a message list is used as is (system prepended if given)."""
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        msgs = list(prompt)
    else:
        raise TypeError(f"a prompt must be a string or a list of {{'role', 'content'}} messages, got {prompt!r:.80}")
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs = [{"role": "system", "content": system}] + msgs
    return msgs


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings shared by every backend (temperature 0 means greedy)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class Generator(abc.ABC):
    """Turns a batch of chat prompts into completions.

    Subclasses implement :meth:`_generate` for already-normalised message lists; ``name`` and
    ``model_id`` identify the backend and model in the on-disk cache key.
    """

    name: str = "generator"
    model_id: str = "?"

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, system: str | None = None) -> list[str]:
        """Return one completion per prompt, in order."""
        params = GenerationParams(max_new_tokens, temperature, top_p, seed)
        params.validate()
        msgs = [as_messages(p, system) for p in prompts]
        if not msgs:
            return []
        out = self._generate(msgs, params)
        if len(out) != len(msgs):
            raise GenerationError(f"{self.name} returned {len(out)} completions for {len(msgs)} prompts")
        return out

    @abc.abstractmethod
    def _generate(self, prompts: list[Messages], params: GenerationParams) -> list[str]:
        """Backend-specific batched generation."""


class StreamingGenerator(Generator):
    """A backend that yields ``(index, completion)`` pairs as results arrive (:meth:`_iter_generate`,
    in any order); :meth:`_generate` puts them back in input order. The disk cache consumes the
    stream directly, so finished completions are stored even if a later one fails."""

    @abc.abstractmethod
    def _iter_generate(self, prompts: list[Messages], params: GenerationParams):
        """Yield ``(index, completion)`` for every prompt, in any order."""

    def _generate(self, prompts: list[Messages], params: GenerationParams) -> list[str]:
        out: list[str] = [""] * len(prompts)
        for i, text in self._iter_generate(prompts, params):
            out[i] = text
        return out
