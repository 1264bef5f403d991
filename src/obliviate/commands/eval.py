"""``obliviate eval tofu|rwku|refusal|lm-eval``: measure forgetting and retention."""

from __future__ import annotations

from . import add_dispatch

#: subcommand -> module implementing ``add_arguments(parser)`` and ``run(args) -> int``
SUITES = {
    "tofu": "obliviate.evals.tofu_cli",
    "rwku": "obliviate.evals.rwku_cli",
    "refusal": "obliviate.evals.refusal_cli",
    "lm-eval": "obliviate.evals.lm_eval_cli",
}


def register(sub) -> None:
    add_dispatch(sub, "eval", "evaluate a model (tofu | rwku | refusal | lm-eval)", SUITES, "suite")
