"""Token-level likelihood terms: NLL on a stream (SFT, ULMR Eq. 1) and gradient ascent.

All terms here are response-only: the batch ``labels`` already hold ``IGNORE_INDEX`` on the
prompt (see :func:`obliviate.data.formatting.encode_example`), so every sum runs over the
response tokens y_t of each exchange (x, y). A plain-text record (RWKU's forget corpus,
:func:`obliviate.data.records.text_record`) is labelled on every token
(:func:`obliviate.data.formatting.encode_text`), so the same terms give the language-modelling
loss over the whole text: GA = +(1/N) Σ_t log p(w_t | w_<t), NPO on log π(w) = Σ_t log p(w_t | w_<t).

The helpers :func:`stream_logits`, :func:`token_nll` and :func:`sequence_logprobs` are shared by
the retain and preference terms. ``stream_logits`` memoises the model's forward per stream for
the current step (in ``ctx.cache["_step"]``), so two terms on the same stream (e.g. retain NLL
and retain KL) share one forward pass.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..data.formatting import IGNORE_INDEX
from .base import StepContext, Term

#: the streams a term may read; "forget_pref" holds the preferred responses paired with "forget"
STREAMS = ("forget", "retain", "forget_pref")

_STEP_KEY = "_step"


def model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the keyword arguments a causal LM forward needs from a stream batch."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def response_window(labels: torch.Tensor) -> int:
    """How many trailing positions of a batch a response-only loss reads: ``T − s``, where ``s`` is
    the position just before the earliest response token of any row (``labels != IGNORE_INDEX``).

    Position ``t`` predicts token ``t + 1``, so the logits at positions ``s .. T−1`` cover every
    response token of every row; the prompt positions before ``s`` never reach a loss and need no
    vocabulary projection (for chat-formatted QA that is about half of all positions).
    """
    has = labels.ne(IGNORE_INDEX)
    t = labels.shape[1]
    rows = has.any(dim=1)
    if not bool(rows.any()):
        return t
    first = torch.where(rows, has.float().argmax(dim=1), torch.full_like(rows, t, dtype=torch.long))
    return t - max(int(first.min()) - 1, 0)


_NO_LOGITS_TO_KEEP: set[type] = set()
#: compute logits on the response window only (set False to measure the full-sequence path:
#: ``benchmarks/train_throughput.py``); the loss values are the same either way
USE_RESPONSE_WINDOW = True


def causal_lm_logits(model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits of ``model`` on ``batch`` for the last :func:`response_window` positions only.

    Uses the ``logits_to_keep`` argument of transformers' causal LMs, so the output projection (and
    every loss on top of it) skips the prompt positions; models without that argument return all
    positions. The loss helpers below align ``labels`` to whatever window the logits cover.
    """
    inputs = model_inputs(batch)
    labels = batch.get("labels")
    keep = response_window(labels) if labels is not None and USE_RESPONSE_WINDOW else 0
    if keep and keep < labels.shape[1] and type(model) not in _NO_LOGITS_TO_KEEP:
        try:
            return model(**inputs, use_cache=False, logits_to_keep=keep).logits
        except TypeError as e:
            if "logits_to_keep" not in str(e):
                raise
            _NO_LOGITS_TO_KEEP.add(type(model))
    return model(**inputs, use_cache=False).logits


def align_labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The columns of ``labels`` that match ``logits`` when the logits cover only the last positions."""
    return labels[:, labels.shape[1] - logits.shape[1]:]


def stream_logits(model, batches: Mapping[str, Mapping[str, torch.Tensor]], stream: str,
                  ctx: StepContext | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``batches[stream]`` (response window, :func:`causal_lm_logits`),
    computed once per step and stream.

    The result is memoised in ``ctx.cache["_step"]`` (the trainer empties it after every
    step) so that several terms reading the same stream cost one forward pass.
    """
    if stream not in batches:
        raise KeyError(f"this step has no {stream!r} batch (streams present: {sorted(batches)})")
    memo = None
    if ctx is not None:
        memo = ctx.cache.setdefault(_STEP_KEY, {})
        key = (id(model), stream)
        if key in memo:
            return memo[key]
    logits = causal_lm_logits(model, batches[stream])
    if memo is not None:
        memo[key] = logits
    return logits


def clear_step_cache(ctx: StepContext) -> None:
    """Forget the per-step forward results (called by the trainer after every step)."""
    ctx.cache.pop(_STEP_KEY, None)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of the next token, and the response mask.

    Returns ``(nll, mask)``, both of shape ``[B, T-1]``: ``nll[b, t] = -log p(labels[b, t+1] |
    tokens ≤ t)`` (0 where the label is ``IGNORE_INDEX``), ``mask`` 1.0 on response tokens.
    When ``logits`` cover only the last positions (:func:`causal_lm_logits`), ``labels`` are
    aligned to them first and the outputs have that window's width minus one.
    """
    labels = align_labels(labels, logits)
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    b, t, v = shift_logits.shape
    nll = F.cross_entropy(shift_logits.reshape(-1, v).float(), shift_labels.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="none").view(b, t)
    mask = shift_labels.ne(IGNORE_INDEX).to(nll.dtype)
    return nll, mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(y | x) = Σ_t log p(y_t | x, y_<t) for every row (sum over response tokens), shape ``[B]``."""
    nll, mask = token_nll(logits, labels)
    return -(nll * mask).sum(dim=-1)


def mean_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over all response tokens of the batch (the convention of HF's causal-LM loss)."""
    nll, mask = token_nll(logits, labels)
    return (nll * mask).sum() / mask.sum().clamp_min(1.0)


class NLL(Term):
    """Supervised fine-tuning loss on one stream (ULMR Eq. 1; SNAP's L_f and L_r).

    L_NLL(θ) = − (1 / Σ_i |y_i|) · Σ_i Σ_t log p_θ(y_{i,t} | x_i, y_{i,<t}),

    the mean over the batch's response tokens of the next-token negative log-likelihood (equal to
    the ``loss`` a HF causal LM returns for the same ``labels``). On the forget stream it trains
    towards ULMR's negative responses or SNAP's obliterated responses; on the retain stream it
    keeps the retained knowledge (GradDiff, NPO+RT, SNAP's L_r, Retraining).
    """

    kind = "nll"

    def __init__(self, weight: float = 1.0, stream: str = "forget", name: str | None = None):
        super().__init__(weight)
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {list(STREAMS)}, got {stream!r}")
        self.stream = stream
        self.needs = (stream,)
        self.name = name or f"{stream}_{self.kind}"

    def __call__(self, model, batches, ctx: StepContext) -> torch.Tensor:
        logits = stream_logits(model, batches, self.stream, ctx)
        return mean_token_nll(logits, batches[self.stream]["labels"])


class GradientAscent(NLL):
    """Gradient ascent on the forget stream (Jang et al., 2022): L_GA(θ) = − L_NLL(θ; D_f).

    Minimising it maximises the forget set's negative log-likelihood.
    """

    kind = "ga"

    def __call__(self, model, batches, ctx: StepContext) -> torch.Tensor:
        return -super().__call__(model, batches, ctx)


def describe(term: Any) -> str:
    """One-line description of a term instance for logs: ``name = weight · Kind(stream)``."""
    streams = ",".join(getattr(term, "needs", ()))
    return f"{term.name} = {term.weight:g} · {type(term).__name__}({streams})"
