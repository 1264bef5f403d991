"""``obliviate eval tofu|rwku|refusal|lm-eval``: measure forgetting and retention."""

from __future__ import annotations

from . import add_dispatch

#: subcommand -> module implementing ``add_arguments(parser)`` and ``run(args) -> int``
SUITES = {
    "tofu": "obliviate.commands.eval_tofu",
    "rwku": "obliviate.commands.eval_rwku",
    "refusal": "obliviate.commands.eval_refusal",
    "lm-eval": "obliviate.commands.eval_lm_eval",
}


def register(sub) -> None:
    add_dispatch(sub, "eval", "evaluate a model (tofu | rwku | refusal | lm-eval)", SUITES, "suite")
