"""Loss terms (forget / retain) and parameter regularizers that the trainer sums."""

from .base import Regularizer, StepContext, Term

__all__ = ["Regularizer", "StepContext", "Term"]
