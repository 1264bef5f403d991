"""The frozen reference model π_ref and the statistics of it that are cached before training.

NPO and DPO only ever need π_ref(y | x) of each training sample, which never changes, so
:func:`ensure_sequence_logprobs` runs the reference once over a stream (no grad, length-sorted
batches) and stores one number per sample, indexed by the ``sample_id`` each batch carries. A
training step then runs only the trained model's forward.

KL to the reference needs a full next-token distribution per response token. Caching the full
vocabulary is prohibitive (SmolLM2: 49,152 floats per token, ~200 KB; TOFU retain90 ≈ 3,600
samples × ~60 tokens ≈ 40 GB), so :class:`~obliviate.objectives.retain.KLRetain` either keeps
the reference forward on the retain batch (exact, the default) or caches the top-k reference
log-probs per token plus the log of the remaining mass (:func:`ensure_topk_logprobs`), which
defines the KL between the two distributions coarsened to k+1 bins: a lower bound of the exact
KL that is 0 exactly when the model matches the reference on those bins.

With LoRA no second copy of the weights is needed: :class:`AdapterDisabledReference` runs the
trained PeftModel with its adapters switched off, which is exactly the base model.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from .base import StepContext
from .forget import align_labels, causal_lm_logits, sequence_logprobs

SEQ_KEY = "seq_logp"
TOPK_KEY = "topk_logp"


def unwrap(model):
    """The module under DDP / accelerate wrappers (``.module``), else ``model`` itself."""
    while hasattr(model, "module") and isinstance(getattr(model, "module"), torch.nn.Module):
        model = model.module
    return model


class AdapterDisabledReference:
    """π_ref for a LoRA run: the trained PeftModel called with its adapters disabled (= the base)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kwargs):
        m = unwrap(self.model)
        with m.disable_adapter():
            return m(**kwargs)

    def parameters(self):
        return self.model.parameters()

    @property
    def training(self) -> bool:
        return unwrap(self.model).training

    def train(self, mode: bool = True):
        unwrap(self.model).train(mode)
        return self

    def eval(self):
        return self.train(False)


def _device_of(reference) -> torch.device:
    return next(iter(reference.parameters())).device


@contextlib.contextmanager
def _eval_mode(module):
    was = module.training
    module.eval()
    try:
        yield
    finally:
        if was:
            module.train()


@torch.no_grad()
def reference_logits(reference, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the frozen reference on one stream batch (eval mode, no gradient), over the same
    response window as the trained model's (:func:`~obliviate.objectives.forget.causal_lm_logits`)."""
    if reference is None:
        raise RuntimeError("this term needs the reference model, but none was kept for training")
    dev = _device_of(reference)
    with _eval_mode(reference):
        inputs = {k: v.to(dev) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
        return causal_lm_logits(reference, inputs)


def _batches(loader: Iterable, desc: str):
    total = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(loader, total=total, desc=desc, leave=False, unit="batch")


def ensure_sequence_logprobs(ctx: StepContext, stream: str, loaders: Mapping[str, Any]) -> torch.Tensor:
    """Compute once, and return, log π_ref(y_i | x_i) (summed over response tokens) for every sample of ``stream``.

    Stored in ``ctx.cache["seq_logp"][stream]`` as a float32 CPU tensor indexed by ``sample_id``,
    so that NPO and DPO reading the same stream share one pass of the reference.
    """
    store = ctx.cache.setdefault(SEQ_KEY, {})
    if stream in store:
        return store[stream]
    if stream not in loaders:
        raise KeyError(f"no {stream!r} data to cache reference log-probs for (streams: {sorted(loaders)})")
    values: dict[int, float] = {}
    for batch in _batches(loaders[stream], f"reference log-probs ({stream})"):
        logits = reference_logits(ctx.reference, batch)
        lp = sequence_logprobs(logits, batch["labels"].to(logits.device)).float().cpu()
        for sid, v in zip(batch["sample_id"].tolist(), lp.tolist()):
            values[int(sid)] = v
    n = max(values) + 1 if values else 0
    out = torch.full((n,), float("nan"))
    for sid, v in values.items():
        out[sid] = v
    store[stream] = out
    return out


def lookup_sequence_logprobs(ctx: StepContext, stream: str, sample_id: torch.Tensor) -> torch.Tensor:
    """The cached log π_ref(y | x) of the batch rows named by ``sample_id`` (on ``sample_id``'s device)."""
    try:
        table = ctx.cache[SEQ_KEY][stream]
    except KeyError as e:
        raise RuntimeError(f"reference log-probs for stream {stream!r} were not prepared; "
                           "call Term.prepare before training") from e
    vals = table[sample_id.detach().cpu().long()]
    if torch.isnan(vals).any():
        raise RuntimeError(f"stream {stream!r}: some sample ids of this batch have no cached reference value")
    return vals.to(sample_id.device)


def ensure_topk_logprobs(ctx: StepContext, stream: str, loaders: Mapping[str, Any], k: int) -> list:
    """Compute once the reference's top-``k`` next-token log-probs on every response token of ``stream``.

    For each sample id the cache holds ``(ids [n_tok, k] int64, logp [n_tok, k] float32,
    log_rest [n_tok] float32)`` where ``log_rest = log(1 − Σ_topk p_ref)`` is the log of the
    probability mass outside the top k, n_tok the sample's response-token count.
    """
    store = ctx.cache.setdefault(TOPK_KEY, {})
    key = (stream, k)
    if key in store:
        return store[key]
    per_sample: dict[int, tuple] = {}
    for batch in _batches(loaders[stream], f"reference top-{k} ({stream})"):
        logits = reference_logits(ctx.reference, batch)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        mask = align_labels(batch["labels"], logits)[:, 1:].to(logp.device).ne(-100)
        top_lp, top_ids = logp.topk(k, dim=-1)
        log_in = torch.logsumexp(top_lp, dim=-1)
        log_rest = torch.log(-torch.expm1(log_in.clamp(max=-1e-7)))
        for row, sid in enumerate(batch["sample_id"].tolist()):
            m = mask[row]
            per_sample[int(sid)] = (top_ids[row][m].cpu(), top_lp[row][m].cpu(), log_rest[row][m].cpu())
    n = max(per_sample) + 1 if per_sample else 0
    table = [per_sample.get(i) for i in range(n)]
    store[key] = table
    return table


def lookup_topk(ctx: StepContext, stream: str, k: int, sample_id: torch.Tensor, device) -> tuple:
    """Concatenate the cached top-k entries of the batch rows, in row order (aligned with masked positions)."""
    table = ctx.cache[TOPK_KEY][(stream, k)]
    rows = [table[i] for i in sample_id.detach().cpu().tolist()]
    if any(r is None for r in rows):
        raise RuntimeError(f"stream {stream!r}: some sample ids of this batch have no cached top-k values")
    ids = torch.cat([r[0] for r in rows]).to(device)
    lp = torch.cat([r[1] for r in rows]).to(device)
    rest = torch.cat([r[2] for r in rows]).to(device)
    return ids, lp, rest


def cache_nbytes(ctx: StepContext) -> int:
    """Bytes held by the cached reference statistics (for logs and the benchmark)."""
    total = 0
    for t in ctx.cache.get(SEQ_KEY, {}).values():
        total += t.numel() * t.element_size()
    for table in ctx.cache.get(TOPK_KEY, {}).values():
        for row in table:
            if row is not None:
                total += sum(x.numel() * x.element_size() for x in row)
    return total
