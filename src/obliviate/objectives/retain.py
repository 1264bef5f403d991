"""Retain-side terms: KL to the frozen reference on the retain stream (TOFU's "KL" baseline).

The retain NLL (GradDiff, NPO+RT, SNAP's L_r) is :class:`~obliviate.objectives.forget.NLL`
with ``stream="retain"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import StepContext, Term
from .forget import STREAMS, align_labels, stream_logits
from .reference import ensure_topk_logprobs, lookup_topk, reference_logits


class KLRetain(Term):
    """KL divergence from the reference to the model on the retain responses (Maini et al., 2024).

    L_KL(θ) = (1/N) Σ_{i,t} KL( p_ref(· | x_i, y_{i,<t}) ‖ p_θ(· | x_i, y_{i,<t}) )
            = (1/N) Σ_{i,t} Σ_v p_ref(v) (log p_ref(v) − log p_θ(v)),

    averaged over the N response tokens of the retain batch. ``topk=None`` (default) computes it
    exactly with a frozen reference forward on the retain batch each step. ``topk=k`` uses the
    cached top-k reference log-probs T_k and the remaining mass r = 1 − Σ_{v∈T_k} p_ref(v) and
    computes the KL of the (k+1)-bin coarsening,

    Σ_{v∈T_k} p_ref(v)(log p_ref(v) − log p_θ(v)) + r (log r − log(1 − Σ_{v∈T_k} p_θ(v))),

    which needs no reference at training time, is ≤ the exact KL and is 0 when p_θ = p_ref.
    """

    kind = "kl"

    def __init__(self, weight: float = 1.0, stream: str = "retain", name: str | None = None,
                 topk: int | None = None):
        super().__init__(weight)
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {list(STREAMS)}, got {stream!r}")
        if topk is not None and int(topk) < 1:
            raise ValueError(f"topk must be a positive integer or None, got {topk!r}")
        self.stream = stream
        self.needs = (stream,)
        self.name = name or f"{stream}_{self.kind}"
        self.topk = None if topk is None else int(topk)

    @property
    def needs_live_reference(self) -> bool:
        """True when the reference must stay in memory during training (the exact KL)."""
        return self.topk is None

    def prepare(self, model, loaders, ctx: StepContext) -> None:
        """With ``topk``, cache the reference's top-k log-probs on every retain response token."""
        if self.topk is not None:
            ensure_topk_logprobs(ctx, self.stream, loaders, self.topk)

    def __call__(self, model, batches, ctx: StepContext) -> torch.Tensor:
        batch = batches[self.stream]
        logits = stream_logits(model, batches, self.stream, ctx)
        mask = align_labels(batch["labels"], logits)[:, 1:].ne(-100)
        logq = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)  # [N, V]
        if logq.shape[0] == 0:
            return logits.sum() * 0.0
        if self.topk is None:
            ref = reference_logits(ctx.reference, batch).to(logits.device)
            logp = torch.log_softmax(ref[:, :-1][mask].float(), dim=-1)
            return F.kl_div(logq, logp, log_target=True, reduction="sum") / logq.shape[0]
        ids, logp_k, log_rest = lookup_topk(ctx, self.stream, self.topk, batch["sample_id"], logq.device)
        if ids.shape[0] != logq.shape[0]:
            raise RuntimeError(f"cached top-k rows ({ids.shape[0]}) do not match the batch's response tokens "
                               f"({logq.shape[0]}); was the data re-encoded with another max_length?")
        logq_k = logq.gather(-1, ids)
        p_k = logp_k.exp()
        kl_top = (p_k * (logp_k - logq_k)).sum(-1)
        logq_in = torch.logsumexp(logq_k, dim=-1)
        logq_rest = torch.log(-torch.expm1(logq_in.clamp(max=-1e-7)))
        kl_rest = log_rest.exp() * (log_rest - logq_rest)
        return (kl_top + kl_rest).mean()
