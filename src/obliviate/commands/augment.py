"""``obliviate augment ulmr|snap``: make the training data with a generator LLM."""

from __future__ import annotations

from . import add_dispatch

#: subcommand -> module implementing ``add_arguments(parser)`` and ``run(args) -> int``
METHODS = {"ulmr": "obliviate.commands.augment_ulmr", "snap": "obliviate.commands.augment_snap",
           "rwku-rt": "obliviate.commands.augment_rwku_rt"}


def register(sub) -> None:
    add_dispatch(sub, "augment", "generate a method's training data with an LLM (ulmr | snap | rwku-rt)", METHODS, "method")
