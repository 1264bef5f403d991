"""The command-line layer: every argument parser of ``obliviate`` lives in this package.

* ``<name>.py`` for each subcommand in :data:`obliviate.cli.COMMANDS`, exposing
  ``register(subparsers)``;
* ``augment_<method>.py`` / ``eval_<suite>.py`` for the sub-subcommands of ``augment`` and ``eval``
  (see :func:`add_dispatch`), exposing ``add_arguments(parser)`` and ``run(args) -> int``;
* ``_args.py``: argument groups and argparse → library mappings several commands share;
* ``memory_estimate.py``: the options of ``python -m obliviate.memory_estimate``.

They map parsed options onto the library functions of the feature packages, which know nothing
of argparse.
"""

from __future__ import annotations

import importlib


def add_dispatch(sub, name: str, help: str, modules: dict[str, str], dest: str):
    """Add subcommand ``name`` whose own subcommands are implemented by ``modules``.

    ``modules`` maps each sub-subcommand to a module exposing ``add_arguments(parser)`` and
    ``run(args) -> int``; a module that is not installed is left out.
    """
    p = sub.add_parser(name, help=help)
    children = p.add_subparsers(dest=dest, metavar=dest.upper(), required=True)
    for child, mod in modules.items():
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        q = children.add_parser(child, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else child)
        module.add_arguments(q)
        q.set_defaults(func=module.run)
    return p
