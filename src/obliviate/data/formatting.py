"""Chat-template formatting with the loss on response tokens only, and length-grouped batching."""

from __future__ import annotations

import random
from typing import Iterable, Iterator, Sequence

import torch

IGNORE_INDEX = -100


def chat_messages(prompt: str, response: str | None = None, system: str | None = None) -> list[dict]:
    """Return the chat message list ``[system?, user, assistant?]`` for one exchange."""
    msgs = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": prompt})
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def prompt_text(tokenizer, prompt: str, system: str | None = None) -> str:
    """Render the chat prompt (with the generation prompt) as text, ready to tokenize."""
    return tokenizer.apply_chat_template(chat_messages(prompt, system=system), tokenize=False,
                                         add_generation_prompt=True)


def encode_example(tokenizer, prompt: str, response: str, *, system: str | None = None,
                   max_length: int | None = 512) -> dict[str, list[int]]:
    """Tokenize one (prompt, response) exchange in the model's chat format.

    ``labels`` equal ``input_ids`` on the response tokens (and the end-of-turn token that closes
    them) and ``IGNORE_INDEX`` on the prompt, so the loss is the response-only NLL
    -Σ_t log p(y_t | x, y_<t) of ULMR Eq. 1. The prompt part is the chat template rendered with
    the generation prompt; the response follows it, closed by the tokenizer's EOS token.
    """
    head = prompt_text(tokenizer, prompt, system=system)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    resp_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        resp_ids = resp_ids + [tokenizer.eos_token_id]
    if max_length is not None and len(head_ids) + len(resp_ids) > max_length:
        keep = max(max_length - len(head_ids), 1)
        resp_ids = resp_ids[:keep]
        if len(head_ids) + len(resp_ids) > max_length:
            head_ids = head_ids[-(max_length - len(resp_ids)):]
    ids = head_ids + resp_ids
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE_INDEX] * len(head_ids) + resp_ids,
    }


def pad_batch(examples: Sequence[dict], pad_token_id: int, *, padding_side: str = "right",
              keys: Iterable[str] = ("input_ids", "attention_mask", "labels")) -> dict[str, torch.Tensor]:
    """Pad a list of encoded examples to the longest one in the batch (dynamic padding).

    ``labels`` pad with ``IGNORE_INDEX``, ``attention_mask`` with 0, ids with ``pad_token_id``.
    Extra keys whose values are not token lists are stacked as tensors when numeric.
    """
    keys = [k for k in keys if k in examples[0]]
    width = max(len(e["input_ids"]) for e in examples)
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        rows = []
        for e in examples:
            seq = list(e[k])
            pad = [fill.get(k, 0)] * (width - len(seq))
            rows.append(pad + seq if padding_side == "left" else seq + pad)
        out[k] = torch.tensor(rows, dtype=torch.long)
    for k in examples[0]:
        if k in out or k in keys:
            continue
        vals = [e[k] for e in examples]
        if all(isinstance(v, (int, float)) for v in vals):
            out[k] = torch.tensor(vals)
    return out


class DataCollator:
    """Callable collator for ``torch.utils.data.DataLoader`` / HF ``Trainer`` (dynamic padding)."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(examples, self.pad_token_id, padding_side=self.padding_side)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, shuffle: bool = True,
                           seed: int = 0, mega_factor: int = 50) -> list[list[int]]:
    """Group indices into batches of similar length so that little compute goes to padding.

    With ``shuffle`` the indices are shuffled, cut into mega-batches of ``mega_factor``
    batches, sorted by length inside each mega-batch and then split; the batch order is
    shuffled too (the scheme of HF's LengthGroupedSampler). Without it, indices are sorted by
    length descending, which is the best order for evaluation.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    idx = list(range(len(lengths)))
    if not shuffle:
        idx.sort(key=lambda i: -lengths[i])
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(idx)
    mega = batch_size * mega_factor
    batches = []
    for start in range(0, len(idx), mega):
        chunk = sorted(idx[start:start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def padding_share(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of token slots that are padding when ``batches`` are padded to their longest row."""
    total = real = 0
    for b in batches:
        width = max(lengths[i] for i in b)
        total += width * len(b)
        real += sum(lengths[i] for i in b)
    return 0.0 if total == 0 else 1.0 - real / total


def iterate_minibatches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    """Yield consecutive slices of ``items`` of at most ``batch_size``."""
    for i in range(0, len(items), batch_size):
        yield items[i:i + batch_size]
