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


#: chat template text -> whether it renders a system message (probed once per template)
_SYSTEM_ROLE_SUPPORT: dict[str, bool] = {}
_SYSTEM_PROBE = "obliviate-system-probe-7f3a"


def supports_system_role(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a system message: it neither raises (Mistral-
    Instruct's and Gemma's templates do) nor silently drops the system text. Probed once per template."""
    tmpl = getattr(tokenizer, "chat_template", None)
    key = tmpl if isinstance(tmpl, str) else repr(tmpl)
    if key not in _SYSTEM_ROLE_SUPPORT:
        try:
            text = tokenizer.apply_chat_template([{"role": "system", "content": _SYSTEM_PROBE},
                                                  {"role": "user", "content": "hi"}],
                                                 tokenize=False, add_generation_prompt=True)
            _SYSTEM_ROLE_SUPPORT[key] = _SYSTEM_PROBE in text
        except Exception:  # jinja's raise_exception("... roles must alternate ...") and the like
            _SYSTEM_ROLE_SUPPORT[key] = False
    return _SYSTEM_ROLE_SUPPORT[key]


def fit_system_role(tokenizer, messages: list[dict]) -> list[dict]:
    """``messages`` as the template can render them. With a template that has no system role, a
    leading system message is merged into the first user turn (``system + "\n\n" + user``, the
    way Llama-2's template folds ``<<SYS>>`` into the first instruction) instead of failing or being
    dropped; otherwise the list is returned unchanged."""
    if not messages or messages[0].get("role") != "system" or supports_system_role(tokenizer):
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    for i, m in enumerate(rest):
        if m.get("role") == "user":
            rest[i] = {**m, "content": f"{system}\n\n{m['content']}"}
            return rest
    return [{"role": "user", "content": system}] + rest


def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """Render ``messages`` with the chat template as text (system message fitted, :func:`fit_system_role`)."""
    return tokenizer.apply_chat_template(fit_system_role(tokenizer, messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def prompt_text(tokenizer, prompt: str, system: str | None = None) -> str:
    """Render the chat prompt (with the generation prompt) as text, ready to tokenize.

    A ``system`` prompt goes into a system message, or into the first user turn when the
    template has no system role (:func:`fit_system_role`).
    """
    return render_chat(tokenizer, chat_messages(prompt, system=system))


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


#: how :func:`encode_text` treats a text longer than ``max_length`` tokens
TEXT_OVERFLOW = ("truncate", "chunk")


def encode_text(tokenizer, text: str, *, max_length: int | None = 512, overflow: str = "truncate",
                add_eos: bool = True) -> list[dict[str, list[int]]]:
    """Tokenize a plain text for language-model training: no chat template, the loss on every token.

    The ids are ``tokenizer(text, add_special_tokens=False)`` followed by the EOS token (RWKU's
    pre-training-style preprocessing of its forget corpus: text + EOS, no BOS); ``labels`` equal
    ``input_ids`` everywhere, so the NLL is −Σ_t log p(w_t | w_<t) over the whole text. A text longer
    than ``max_length`` is cut according to ``overflow``: ``"truncate"`` keeps its first
    ``max_length`` tokens (what RWKU's GA / NPO runs do with ``cutoff_len``: their ``ga``/``npo``
    stages do not pack), ``"chunk"`` splits it into consecutive windows of ``max_length`` tokens
    so no text is lost (a last window of a single token, which predicts nothing, is dropped).
    Returns a list of encoded examples (one unless chunked).
    """
    if overflow not in TEXT_OVERFLOW:
        raise ValueError(f"overflow must be one of {list(TEXT_OVERFLOW)}, got {overflow!r}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    if max_length is None or len(ids) <= max_length:
        pieces = [ids]
    elif overflow == "truncate":
        pieces = [ids[:max_length]]
    else:
        pieces = [ids[i:i + max_length] for i in range(0, len(ids), max_length)]
        if len(pieces) > 1 and len(pieces[-1]) < 2:
            pieces.pop()
    return [{"input_ids": list(p), "attention_mask": [1] * len(p), "labels": list(p)} for p in pieces]


def encode_record(tokenizer, record, *, system: str | None = None, max_length: int | None = 512,
                  text_overflow: str = "truncate") -> list[dict[str, list[int]]]:
    """Encode one record for training: a QA pair in the chat format with the loss on the response
    (:func:`encode_example`), or a plain-text record (:func:`obliviate.data.records.text_record`) as
    raw text with the loss on every token (:func:`encode_text`; ``system`` does not apply).
    Returns a list of examples (several only for a chunked text)."""
    from .records import is_text_record

    if is_text_record(record):
        return encode_text(tokenizer, record.answer, max_length=max_length, overflow=text_overflow)
    return [encode_example(tokenizer, record.question, record.answer, system=system, max_length=max_length)]


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
