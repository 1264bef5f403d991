"""``obliviate eval tofu|rwku|refusal|lm-eval``: measure forgetting and retention."""

from __future__ import annotations

import importlib

#: subcommand -> module implementing ``add_arguments(parser)`` and ``run(args) -> int``
SUITES = {
    "tofu": "obliviate.evals.tofu_cli",
    "rwku": "obliviate.evals.rwku_cli",
    "refusal": "obliviate.evals.refusal_cli",
    "lm-eval": "obliviate.evals.lm_eval_cli",
}


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model (tofu | rwku | refusal | lm-eval)")
    suites = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name, mod in SUITES.items():
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        q = suites.add_parser(name, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else name)
        module.add_arguments(q)
        q.set_defaults(func=module.run)
