"""The contract every loss term and regularizer follows; the trainer sums them.

A training step sees one batch per data stream (``"forget"``, ``"retain"``, and any other
stream a method declares, e.g. ``"forget_pref"`` for DPO). Each :class:`Term` reads the streams
it ``needs`` and returns a scalar; each :class:`Regularizer` looks only at the parameters. The
step loss is Σ weight_i · term_i + Σ weight_j · regularizer_j.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch


@dataclass
class StepContext:
    """What a term may need besides the batches: the frozen reference and a scratch cache.

    ``reference`` is the frozen initial model (or None when every term works from cached
    reference values); ``cache`` holds per-sample reference statistics computed once before
    training (keyed by term name), looked up through the batch's ``sample_id`` tensor.
    """

    reference: Any = None
    cache: dict[str, Any] = field(default_factory=dict)
    step: int = 0


class Term(abc.ABC):
    """One additive loss term over batches, e.g. NLL on the forget stream."""

    name: str = "term"
    needs: tuple[str, ...] = ("forget",)

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def prepare(self, model, loaders: Mapping[str, Any], ctx: StepContext) -> None:
        """Optional one-off work before training (e.g. cache reference log-probs)."""

    @abc.abstractmethod
    def __call__(self, model, batches: Mapping[str, Mapping[str, torch.Tensor]], ctx: StepContext) -> torch.Tensor:
        """Return this term's (unweighted) scalar loss for one step."""


class Regularizer(abc.ABC):
    """A penalty on the parameters alone, e.g. λ·SW_p(θ, θ_init) (SNAP Eq. 6)."""

    name: str = "regularizer"

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def setup(self, model, retain_loader=None) -> None:
        """Snapshot whatever the penalty compares against (θ_init, projections, Fisher)."""

    @abc.abstractmethod
    def __call__(self, model) -> torch.Tensor:
        """Return the (unweighted) scalar penalty for the model's current parameters."""
