"""Batched model scoring for evaluation: log-probabilities of responses and greedy answers.

Every function here runs the model in **length-grouped batches** (little padding) with
``torch.no_grad`` and returns results in the input order. Three primitives cover every
benchmark in :mod:`obliviate.evals`:

* :func:`sequence_logprobs` — ``log P(response | chat prompt)`` summed over the response tokens
  (plus the closing end-of-turn token), for many (prompt, response) pairs at once. TOFU's answer,
  paraphrased answer and all perturbed answers of many questions go through the same batches.
* :func:`score_continuations` — the same for raw text prefixes (already rendered prompts,
  few-shot prompts, "Answer:" suffixes) and continuations.
* :func:`next_token_logprobs` — the next-token log-distribution restricted to candidate tokens
  (multiple-choice letters), one forward per batch.
* :func:`mean_loss` — mean token NLL of raw texts (the LOSS membership-inference score).
* :func:`generate_answers` / :func:`generate_from_text` — batched greedy generation with left
  padding and the KV cache.

Implementation notes: batches are left-padded with explicit ``position_ids`` (so every row sees
the positions it would see alone) and the model is asked only for the logits of the last
``K`` positions (``logits_to_keep``), where ``K`` covers the longest scored continuation of the
batch: with left padding all continuations end at the last column, so the vocabulary projection
and log-softmax are never computed over prompt tokens.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..data.formatting import encode_example, length_grouped_batches, pad_batch

__all__ = [
    "sequence_logprobs",
    "score_continuations",
    "score_token_ids",
    "next_token_logprobs",
    "mean_loss",
    "generate_answers",
    "generate_from_text",
    "model_device",
]


def model_device(model) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return int(pid)


def _accepts_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False


def _forward_last(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions of a left-padded batch, as float32 ``(B, keep, V)``."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    if _accepts_logits_to_keep(model):
        try:
            logits = model(**kwargs, logits_to_keep=keep).logits
        except TypeError:
            logits = model(**kwargs).logits
    else:
        logits = model(**kwargs).logits
    return logits[:, -keep:, :].float()


def _check_items(items) -> list[int]:
    todo = []
    for i, (pre, tgt) in enumerate(items):
        if len(pre) == 0:
            raise ValueError(f"item {i}: the prefix is empty; a continuation needs at least one context token")
        if len(tgt) > 0:
            todo.append(i)
    return todo


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., target]`` without materialising the full log-softmax."""
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _score_flat(model, items, todo, batch_size, pad_token_id, progress, results) -> None:
    """One left-padded forward per length-grouped batch over full ``prefix + target`` sequences."""
    device = model_device(model)
    lengths = [len(items[i][0]) + len(items[i][1]) for i in todo]
    batches = length_grouped_batches(lengths, batch_size, shuffle=False)
    desc = progress if isinstance(progress, str) else "score"
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        idx = [todo[j] for j in batch]
        examples = [{"input_ids": list(items[i][0]) + list(items[i][1]),
                     "attention_mask": [1] * (len(items[i][0]) + len(items[i][1]))} for i in idx]
        padded = pad_batch(examples, pad_token_id, padding_side="left", keys=("input_ids", "attention_mask"))
        ids = padded["input_ids"].to(device)
        mask = padded["attention_mask"].to(device)
        n_max = max(len(items[i][1]) for i in idx)
        logits = _forward_last(model, ids, mask, n_max + 1)  # (B, n_max + 1, V)
        tok_lp = _token_logprobs(logits[:, :-1, :], ids[:, -n_max:])  # (B, n_max)
        for r, i in enumerate(idx):
            n = len(items[i][1])
            results[i] = (float(tok_lp[r, n_max - n:].sum().item()), n)


def _score_shared(model, items, todo, batch_size, pad_token_id, progress, results) -> None:
    """Score continuations that share a prefix with ONE prefix pass per distinct prefix.

    Items with identical prefixes are grouped (TOFU: the answer, paraphrase and perturbed answers
    of one question). Per batch: the distinct prefixes run once (left-padded, KV cache kept, only
    the last position's logits), the cache rows are repeated for each continuation
    (``batch_select_indices``), and all continuations run in one forward on top of it (right-padded,
    positions continuing each prefix). Same numbers as :func:`_score_flat`, about half the FLOPs
    when prefixes are as long as the answers.
    """
    device = model_device(model)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in todo:
        groups.setdefault(tuple(items[i][0]), []).append(i)
    desc = progress if isinstance(progress, str) else "score"
    batches = _pack_prefix_groups(groups, batch_size, lambda i: len(items[i][1]))
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        idx = [i for _, members in batch for i in members]
        last, out2, c_ids, c_mask, rows_t = _forward_on_shared_prefixes(
            model, batch, [list(items[i][1]) for i in idx], pad_token_id, device)
        logits = torch.cat([last[rows_t][:, None, :], out2.logits[:, :-1, :].float()], dim=1)  # (C, Lc, V)
        tok_lp = _token_logprobs(logits, c_ids) * c_mask
        sums = tok_lp.sum(-1).tolist()
        for r, i in enumerate(idx):
            results[i] = (float(sums[r]), len(items[i][1]))
        del out2


def _cache_kwarg(model) -> str:
    """The forward's name for a KV cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _pack_prefix_groups(groups: dict, batch_size: int, cont_len) -> list[list[tuple[tuple[int, ...], list[int]]]]:
    """Split prefix groups into chunks of <= ``batch_size`` members and pack the chunks (longest
    prefixes first) into batches of at most ``batch_size`` continuations."""
    chunks = [(pre, members[k:k + batch_size]) for pre, members in groups.items()
              for k in range(0, len(members), batch_size)]
    chunks.sort(key=lambda c: (-len(c[0]), -max(cont_len(i) for i in c[1])))
    batches: list[list[tuple[tuple[int, ...], list[int]]]] = []
    cur: list = []
    for c in chunks:
        if cur and sum(len(m) for _, m in cur) + len(c[1]) > batch_size:
            batches.append(cur)
            cur = []
        cur.append(c)
    if cur:
        batches.append(cur)
    return batches


def _prefill_prefixes(model, batch, pad_token_id: int, device):
    """One forward over the distinct prefixes of ``batch`` (left-padded, KV cache kept, only the last
    position's logits), the cache rows then repeated for each group member (``batch_select_indices``).

    Returns ``(last_logits (G, V) float32, cache, prefix_mask (G, P), rows, prefix_ids (G, P))`` where
    ``rows[r]`` is the prefix group of member ``r`` (members in ``batch`` order).
    """
    prefixes = [list(pre) for pre, _ in batch]
    pp = pad_batch([{"input_ids": p, "attention_mask": [1] * len(p)} for p in prefixes], pad_token_id,
                   padding_side="left", keys=("input_ids", "attention_mask"))
    p_ids, p_mask = pp["input_ids"].to(device), pp["attention_mask"].to(device)
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, use_cache=True, logits_to_keep=1)
    last = out.logits[:, -1, :].float()  # (G, V): predicts each continuation's first token
    cache = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
    rows = torch.tensor([g for g, (_, members) in enumerate(batch) for _ in members], device=device)
    cache.batch_select_indices(rows)
    return last, cache, p_mask, rows, p_ids


def _forward_on_shared_prefixes(model, batch, conts: list[list[int]], pad_token_id: int, device):
    """Run the distinct prefixes of ``batch`` once (left-padded, KV cache kept, last-position logits),
    repeat each cache row for its members (``batch_select_indices``) and run the continuations
    ``conts`` (right-padded, positions continuing each prefix) on top of it.

    Returns ``(last_prefix_logits (G, V), continuation outputs, c_ids, c_mask, rows)`` where
    ``rows[r]`` is the prefix group of continuation ``r``.
    """
    last, cache, p_mask, rows_t, _ = _prefill_prefixes(model, batch, pad_token_id, device)
    cp = pad_batch([{"input_ids": c, "attention_mask": [1] * len(c)} for c in conts], pad_token_id,
                   padding_side="right", keys=("input_ids", "attention_mask"))
    c_ids, c_mask = cp["input_ids"].to(device), cp["attention_mask"].to(device)
    plen = p_mask.sum(-1)[rows_t]  # true prefix lengths
    c_pos = plen[:, None] + torch.arange(c_ids.shape[1], device=device)[None, :]
    full_mask = torch.cat([p_mask[rows_t], c_mask], dim=1)
    out2 = model(input_ids=c_ids, attention_mask=full_mask, position_ids=c_pos, use_cache=True,
                 **{_cache_kwarg(model): cache})
    return last, out2, c_ids, c_mask, rows_t


def common_prefix_groups(encoded: Sequence[Sequence[int]], *, min_prefix: int = 32,
                         min_share: float = 0.5) -> dict[tuple[int, ...], list[int]]:
    """Group token sequences that share a long common prefix (few-shot prompts of one task).

    Sequences are sorted; neighbours join one group while their common prefix is at least
    ``min_prefix`` tokens and ``min_share`` of the newcomer's length. A group's key is the prefix
    all its members share, cut so that every member keeps at least one token after it (a
    singleton's key is all but its last token). Returns ``{prefix: [indices]}``.
    """
    order = sorted(range(len(encoded)), key=lambda i: tuple(encoded[i]))

    def lcp(a, b) -> int:
        n = min(len(a), len(b))
        k = 0
        while k < n and a[k] == b[k]:
            k += 1
        return k

    groups: list[tuple[int, list[int]]] = []
    for i in order:
        if groups:
            plen, members = groups[-1]
            k = min(lcp(encoded[members[-1]], encoded[i]), plen)
            if k >= min_prefix and k >= min_share * len(encoded[i]):
                groups[-1] = (k, members + [i])
                continue
        groups.append((len(encoded[i]), [i]))
    out: dict[tuple[int, ...], list[int]] = {}
    for plen, members in groups:
        plen = min([plen] + [len(encoded[m]) - 1 for m in members])
        key = tuple(encoded[members[0]][:plen])
        out.setdefault(key, []).extend(members)
    return out


def _supports_shared_prefix(model) -> bool:
    """True for decoder models whose forward takes ``past_key_values`` and ``logits_to_keep``
    and whose cache is a plain (non-sliding) transformers ``DynamicCache``."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    if getattr(cfg, "sliding_window", None) or getattr(cfg, "use_sliding_window", False):
        return False
    if getattr(cfg, "model_type", "") not in _SHARED_PREFIX_TYPES:
        return False
    return _accepts_logits_to_keep(model)


#: architectures checked to give identical numbers with the shared-prefix path (see tests)
_SHARED_PREFIX_TYPES = {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "olmo", "olmo2", "granite", "smollm3"}


@torch.no_grad()
def score_token_ids(model, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 16,
                    pad_token_id: int = 0, progress: bool | str = False,
                    share_prefix: bool | None = None) -> list[tuple[float, int]]:
    """Score token-id continuations: for each ``(prefix_ids, target_ids)`` return
    ``(Σ_t log p(target_t | prefix, target_<t), len(target_ids))``.

    Items are grouped into batches of ``batch_size`` continuations and scored with one forward
    per batch. ``share_prefix`` (default: on when several items share a prefix and the
    architecture supports it) runs each distinct prefix once and reuses its KV cache for all its
    continuations; otherwise every ``prefix + target`` is one left-padded row of a length-grouped
    batch. Both give the same numbers. ``prefix_ids`` must be non-empty (the first target token
    needs a context); an empty target scores ``(0.0, 0)``. ``progress`` may be a description.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results: list[tuple[float, int]] = [(0.0, 0)] * len(items)
    todo = _check_items(items)
    if not todo:
        return results
    if share_prefix is None:
        n_distinct = len({tuple(items[i][0]) for i in todo})
        share_prefix = n_distinct <= 0.75 * len(todo) and _supports_shared_prefix(model)
    was_training = model.training
    model.eval()
    try:
        scorer = _score_shared if share_prefix else _score_flat
        scorer(model, items, todo, batch_size, pad_token_id, progress, results)
    finally:
        model.train(was_training)
    return results


def sequence_logprobs(model, tokenizer, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16,
                      system: str | None = None, max_length: int | None = 512,
                      progress: bool | str = False) -> list[tuple[float, int]]:
    """Return ``(log P(response | prompt), n_response_tokens)`` for each ``(prompt, response)`` pair.

    The pair is formatted exactly as in training (:func:`obliviate.data.formatting.encode_example`:
    the chat template with the generation prompt, then the response closed by the EOS /
    end-of-turn token), and the sum runs over the response tokens only (the ``labels`` that are
    not ``IGNORE_INDEX``, i.e. the response and its closing token), as TOFU does. The mean token
    NLL of the response is ``-sum / n`` and TOFU's probability is ``exp(sum / n)``.

    All pairs are scored together in length-grouped batches of ``batch_size`` (one forward each).
    ``system`` is an optional system prompt (the Prompting baseline).
    """
    items = []
    for k, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise TypeError(f"pairs[{k}] must be a (prompt, response) pair of strings, got {pair!r:.80}")
        enc = encode_example(tokenizer, pair[0], pair[1], system=system, max_length=max_length)
        n_prompt = sum(1 for lab in enc["labels"] if lab == -100)
        items.append((enc["input_ids"][:n_prompt], enc["input_ids"][n_prompt:]))
    return score_token_ids(model, items, batch_size=batch_size, pad_token_id=_pad_id(tokenizer), progress=progress)


def score_continuations(model, tokenizer, prefixes: Sequence[str], continuations: Sequence[str], *,
                        batch_size: int = 16, max_length: int | None = 2048,
                        progress: bool | str = False) -> list[tuple[float, int]]:
    """Return ``(Σ log p(continuation tokens | prefix), n_tokens)`` for raw-text prefix/continuation pairs.

    Prefix and continuation are tokenized separately (no special tokens added) and concatenated,
    so the continuation's tokens are exactly ``tokenizer(continuation)``. Used for option scoring
    (TruthfulQA MC1: prefix = rendered prompt + ``"A:"``, continuation = ``" " + option``).
    Over-long prefixes are cut from the left to fit ``max_length``.
    """
    if len(prefixes) != len(continuations):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
    items = []
    for pre, cont in zip(prefixes, continuations):
        p = tokenizer(pre, add_special_tokens=False)["input_ids"]
        c = tokenizer(cont, add_special_tokens=False)["input_ids"]
        if max_length is not None and len(p) + len(c) > max_length:
            c = c[: max_length - 1]
            p = p[-(max_length - len(c)):]
        items.append((p, c))
    return score_token_ids(model, items, batch_size=batch_size, pad_token_id=_pad_id(tokenizer), progress=progress)


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: Sequence[str], candidate_ids: Sequence[int], *,
                        batch_size: int = 8, max_length: int | None = 2048,
                        progress: bool | str = False, share_prefix: bool | None = None) -> list[list[float]]:
    """For each raw-text prompt, ``log p(next token = c | prompt)`` for every candidate token id ``c``.

    One forward per length-grouped batch, keeping only the last position's logits (the log-softmax
    is over the full vocabulary). Used for MMLU-style multiple choice: the prediction is the
    candidate letter with the highest log-probability. Over-long prompts are cut from the left.
    ``share_prefix`` (default: on for supported architectures) runs a prefix shared by several
    prompts (:func:`common_prefix_groups`) once and only the prompts' own tails on top of its KV
    cache; the other prompts take the plain path; the numbers are the same.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not candidate_ids:
        raise ValueError("candidate_ids is empty")
    encoded = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("an empty prompt cannot be scored")
        if max_length is not None:
            ids = ids[-max_length:]
        encoded.append(ids)
    out: list[list[float]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    device = model_device(model)
    cand = torch.tensor(list(candidate_ids), dtype=torch.long, device=device)
    desc = progress if isinstance(progress, str) else "choices"
    pad = _pad_id(tokenizer)
    try:
        for kind, batch in tqdm(_prefix_sharing_jobs(model, encoded, batch_size, share_prefix), desc=desc,
                                disable=not progress, leave=False):
            if kind == "flat":
                padded = pad_batch([{"input_ids": encoded[i], "attention_mask": [1] * len(encoded[i])}
                                    for i in batch], pad, padding_side="left", keys=("input_ids", "attention_mask"))
                logits = _forward_last(model, padded["input_ids"].to(device), padded["attention_mask"].to(device),
                                       1)[:, -1, :]
                idx = batch
            else:
                # few-shot prompts of one task share their shots: that prefix runs once per group, then only
                # each prompt's own tail on top of its KV cache (RWKU MMLU: 57 tasks x 3 questions)
                idx = [i for _, members in batch for i in members]
                conts = [list(encoded[i][len(pre):]) for pre, members in batch for i in members]
                _, out2, _, c_mask, _ = _forward_on_shared_prefixes(model, batch, conts, pad, device)
                logits = out2.logits[torch.arange(len(idx), device=device), c_mask.sum(-1) - 1].float()
                del out2
            lp = torch.log_softmax(logits, dim=-1)[:, cand]
            for r, i in enumerate(idx):
                out[i] = [float(v) for v in lp[r].tolist()]
    finally:
        model.train(was_training)
    return out


def mean_loss(model, tokenizer, texts: Sequence[str], *, batch_size: int = 8, max_length: int | None = 1024,
              add_special_tokens: bool = True, progress: bool | str = False) -> list[float]:
    """Per-text mean token negative log-likelihood of raw text (no chat template).

    ``loss(x) = -1/(T-1) Σ_{t=2..T} log p(x_t | x_<t)`` over the text's tokens (the tokenizer's
    special tokens included, as ``model(ids, labels=ids).loss`` computes it). This is the LOSS
    membership-inference score RWKU reports for its FM / RM sets (higher = less memorised).
    Texts longer than ``max_length`` tokens are truncated; a text of fewer than two tokens raises.
    """
    items = []
    for k, t in enumerate(texts):
        ids = tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"]
        if max_length is not None:
            ids = ids[:max_length]
        if len(ids) < 2:
            raise ValueError(f"texts[{k}] has {len(ids)} token(s); the loss needs at least 2")
        items.append((ids[:1], ids[1:]))
    scored = score_token_ids(model, items, batch_size=batch_size, pad_token_id=_pad_id(tokenizer), progress=progress)
    return [-s / n for s, n in scored]


def generate_answers(model, tokenizer, questions: Sequence[str], *, max_new_tokens: int = 64, batch_size: int = 16,
                     system: str | None = None, progress: bool = False) -> list[str]:
    """Greedy answers to ``questions`` in the model's chat format.

    Goes through :class:`obliviate.generate.transformers_backend.TransformersGenerator` (prompts
    sorted by length, left padding, KV cache, temperature 0), so evaluation generates exactly as
    the rest of obliviate does. ``system`` is an optional system prompt.
    """
    from ..generate.transformers_backend import TransformersGenerator

    gen = TransformersGenerator(model, tokenizer, batch_size=batch_size, progress=progress)
    return gen.generate(list(questions), max_new_tokens=max_new_tokens, temperature=0.0, system=system)


def _prefix_sharing_jobs(model, encoded: Sequence[Sequence[int]], batch_size: int,
                         share_prefix: bool | None) -> list[tuple[str, list]]:
    """Plan the batches of a prompt list: ``("shared", [(prefix, members), ...])`` for prompts that
    share a prefix with at least one other (:func:`common_prefix_groups`, packed by
    :func:`_pack_prefix_groups`), ``("flat", [indices])`` length-grouped batches for the rest.

    ``share_prefix`` False: everything flat; None: share only on supported architectures.
    """
    shared: dict[tuple[int, ...], list[int]] = {}
    if share_prefix is not False and len(encoded) > 1 and (share_prefix or _supports_shared_prefix(model)):
        shared = {pre: m for pre, m in common_prefix_groups(encoded).items() if len(m) > 1}
    in_shared = {i for m in shared.values() for i in m}
    flat = [i for i in range(len(encoded)) if i not in in_shared]
    return [("shared", b) for b in _pack_prefix_groups(shared, batch_size, lambda i: len(encoded[i]))] + \
        [("flat", [flat[j] for j in b]) for b in length_grouped_batches([len(encoded[i]) for i in flat], batch_size,
                                                                         shuffle=False)]


class RegexStop:
    """A transformers stopping criterion: a row is done once its generated text matches ``pattern``."""

    def __init__(self, tokenizer, pattern: str, prompt_width: int):
        import re

        self.tokenizer = tokenizer
        self.pattern = re.compile(pattern)
        self.width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width:], skip_special_tokens=True)
        return torch.tensor([bool(self.pattern.search(t)) for t in texts], dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate_from_text(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 32, batch_size: int = 16,
                       stop_strings: Sequence[str] | None = None, max_length: int | None = 2048,
                       progress: bool | str = False, stop_regex: str | None = None,
                       share_prefix: bool | None = None) -> list[str]:
    """Greedy continuations of already-rendered prompt texts (batched, left padding, KV cache).

    For benchmarks whose prompt does not end at the chat template's generation point (RWKU
    appends ``"Answer:"`` after it). ``stop_strings`` end a row early (e.g. ``["\\n"]`` for RWKU's
    one-line answers) and the text is cut at the first stop string. ``stop_regex`` ends a row as
    soon as its text so far matches (e.g. BBH's ``the answer is (.*?)\\.``): the text is kept whole,
    so a caller that extracts the first match gets what the full-length generation would give,
    without decoding the tokens after it. ``share_prefix`` (default: on for supported
    architectures) prefills a prefix shared by several prompts (few-shot shots,
    :func:`common_prefix_groups`) once and continues each prompt from its KV cache; the other
    prompts go through the plain batched path. Results keep input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    encoded = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        if max_length is not None:
            ids = ids[-max_length:]
        encoded.append(ids)
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    device = model_device(model)
    pad = _pad_id(tokenizer)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                  pad_token_id=pad)
    if stop_strings:
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    jobs = _prefix_sharing_jobs(model, encoded, batch_size, share_prefix)

    def finish(gen, width, idx):
        for r, i in enumerate(idx):
            text = tokenizer.decode(gen[r, width:], skip_special_tokens=True)
            for s in stop_strings or ():
                if s in text:
                    text = text[: text.index(s)]
            out[i] = text.strip()

    def stopping(width):
        if not stop_regex:
            return {}
        from transformers import StoppingCriteriaList

        return {"stopping_criteria": StoppingCriteriaList([RegexStop(tokenizer, stop_regex, width)])}

    try:
        for kind, batch in tqdm(jobs, desc=progress if isinstance(progress, str) else "generate",
                                disable=not progress, leave=False):
            if kind == "flat":
                padded = pad_batch([{"input_ids": encoded[i], "attention_mask": [1] * len(encoded[i])} for i in batch],
                                   pad, padding_side="left", keys=("input_ids", "attention_mask"))
                width = padded["input_ids"].shape[1]
                gen = model.generate(input_ids=padded["input_ids"].to(device),
                                     attention_mask=padded["attention_mask"].to(device), **kwargs, **stopping(width))
                finish(gen, width, batch)
                continue
            # few-shot prompts sharing their shots (RWKU BBH: 27 tasks x 3 questions): each distinct prefix is
            # prefilled once, its KV cache repeated for the members, and generation continues from
            # [left-padded prefix | padding | the member's own tail]; positions come from the attention mask
            idx = [i for _, members in batch for i in members]
            ids, mask, cache = _shared_prefix_generation_inputs(model, batch, encoded, pad, device)
            width = ids.shape[1]
            gen = model.generate(input_ids=ids, attention_mask=mask, **{_cache_kwarg(model): cache}, **kwargs,
                                 **stopping(width))
            finish(gen, width, idx)
    finally:
        model.train(was_training)
    return out


def _shared_prefix_generation_inputs(model, batch, encoded, pad: int, device):
    """Prefill the distinct prefixes of ``batch`` once and build the inputs to continue every member.

    Returns ``(input_ids, attention_mask, cache)``: row r is its group's left-padded prefix followed
    by the member's own tail, right-aligned (padding between prefix and tail is masked out), and
    the cache holds the prefix keys/values repeated per member.
    """
    _, cache, p_mask, rows, p_ids = _prefill_prefixes(model, batch, pad, device)
    tails = [list(encoded[i][len(pre):]) for pre, members in batch for i in members]
    tp = pad_batch([{"input_ids": t, "attention_mask": [1] * len(t)} for t in tails], pad,
                   padding_side="left", keys=("input_ids", "attention_mask"))
    ids = torch.cat([p_ids[rows], tp["input_ids"].to(device)], dim=1)
    mask = torch.cat([p_mask[rows], tp["attention_mask"].to(device)], dim=1)
    return ids, mask, cache

