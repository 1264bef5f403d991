"""Preference-style forget terms built on sequence log-probs: DPO / IdkDPO and NPO.

Both compare the trained policy π_θ with the frozen reference π_ref through the response
log-likelihood log π(y | x) = Σ_t log p(y_t | x, y_<t) (summed over response tokens, the
convention of the NPO and TOFU reference code). π_ref(y | x) is computed once per sample before
training (``prepare``) and looked up by ``sample_id``; pass ``cache=False`` to run the reference
forward every step instead (only useful for measuring what the cache saves).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import StepContext, Term
from .forget import sequence_logprobs, stream_logits
from .reference import ensure_sequence_logprobs, lookup_sequence_logprobs, reference_logits


class _SequenceTerm(Term):
    def __init__(self, weight: float = 1.0, beta: float = 0.1, name: str | None = None, cache: bool = True):
        super().__init__(weight)
        if not float(beta) > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.beta = float(beta)
        self.cache = bool(cache)
        self.name = name or self.kind

    @property
    def needs_live_reference(self) -> bool:
        """True when the reference must stay in memory during training (``cache=False``)."""
        return not self.cache

    def prepare(self, model, loaders, ctx: StepContext) -> None:
        """Cache log π_ref(y | x) for every sample of the streams this term reads."""
        if self.cache:
            for s in self.needs:
                ensure_sequence_logprobs(ctx, s, loaders)

    def _logps(self, model, batches, stream: str, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        batch = batches[stream]
        logits = stream_logits(model, batches, stream, ctx)
        policy = sequence_logprobs(logits, batch["labels"])
        if self.cache:
            ref = lookup_sequence_logprobs(ctx, stream, batch["sample_id"])
        else:
            ref_logits = reference_logits(ctx.reference, batch).to(logits.device)
            ref = sequence_logprobs(ref_logits, batch["labels"].to(logits.device))
        return policy, ref.to(policy.dtype)


class NPO(_SequenceTerm):
    """Negative Preference Optimization on the forget stream (Zhang et al., 2024).

    L_NPO(θ) = (2/β) · E_{(x,y)∈D_f} [ log(1 + (π_θ(y|x) / π_ref(y|x))^β) ]
             = −(2/β) · E [ log σ(−β (log π_θ(y|x) − log π_ref(y|x))) ],   β = 0.1 by default.
    """

    kind = "npo"
    needs = ("forget",)

    def __call__(self, model, batches, ctx: StepContext) -> torch.Tensor:
        policy, ref = self._logps(model, batches, "forget", ctx)
        return -(2.0 / self.beta) * F.logsigmoid(-self.beta * (policy - ref)).mean()


class DPO(_SequenceTerm):
    """Direct Preference Optimization for unlearning (Rafailov et al., 2023; IdkDPO in TOFU).

    L_DPO(θ) = −E log σ( β [ (log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] ),

    with y_w the preferred response (a refusal / "I don't know" / a generated negative answer /
    one of TOFU's perturbed, wrong answers — ``TrainConfig.preferred`` — stream ``forget_pref``) and y_l the dispreferred original answer (stream ``forget``), paired
    row by row; β = 0.1 by default.
    """

    kind = "dpo"
    needs = ("forget", "forget_pref")

    def __call__(self, model, batches, ctx: StepContext) -> torch.Tensor:
        pol_w, ref_w = self._logps(model, batches, "forget_pref", ctx)
        pol_l, ref_l = self._logps(model, batches, "forget", ctx)
        margin = (pol_w - ref_w) - (pol_l - ref_l)
        return -F.logsigmoid(self.beta * margin).mean()
