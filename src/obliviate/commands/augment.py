"""``obliviate augment ulmr|snap``: make the training data with a generator LLM."""

from __future__ import annotations

import importlib

#: subcommand -> module implementing ``add_arguments(parser)`` and ``run(args) -> int``
METHODS = {"ulmr": "obliviate.augment.ulmr_cli", "snap": "obliviate.augment.snap_cli"}


def register(sub) -> None:
    p = sub.add_parser("augment", help="generate a method's training data with an LLM (ulmr | snap)")
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name, mod in METHODS.items():
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        q = methods.add_parser(name, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else name)
        module.add_arguments(q)
        q.set_defaults(func=module.run)
