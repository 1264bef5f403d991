"""Where data comes from: ``tofu:<split>`` / ``rwku:<target>`` shorthands, files, and defaults.

The same spec strings work in ``obliviate train``, ``obliviate augment`` and ``obliviate run``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .records import DataError, QARecord

#: where ``tofu:<split>`` reads TOFU from when nothing says otherwise
TOFU_HUB = "locuslab/TOFU"
RWKU_HUB = "jinzhuoran/RWKU"


# ---------------------------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------------------------
def _shared_data_dir(name: str, marker: str | None = None) -> str | None:
    """``../shared/data/<name>`` relative to the working directory or to this repository, if present."""
    here = Path(__file__).resolve()
    cands = [Path.cwd().parent / "shared" / "data" / name]
    if len(here.parents) > 4:
        cands.append(here.parents[4] / "shared" / "data" / name)
    for cand in cands:
        if (cand / marker).is_file() if marker else cand.is_dir():
            return str(cand)
    return None


def default_tofu_source() -> str:
    """``$OBLIVIATE_TOFU``, else ``../shared/data/tofu`` (relative to the working directory or to the
    repository this package lives in) when that folder exists, else the hub name ``locuslab/TOFU``."""
    return os.environ.get("OBLIVIATE_TOFU") or _shared_data_dir("tofu", "full.jsonl") or TOFU_HUB


def default_rwku_source() -> str:
    """``$OBLIVIATE_RWKU``, else ``../shared/data/rwku`` when present, else ``jinzhuoran/RWKU``."""
    return os.environ.get("OBLIVIATE_RWKU") or _shared_data_dir("rwku") or RWKU_HUB


def resolve_records(spec: str | os.PathLike, *, tofu_source: str | None = None,
                    rwku_source: str | None = None) -> list[QARecord]:
    """Records for a data spec: a file / saved dataset (``read_records``), ``tofu:<split>`` or
    ``rwku:<target>[:<split>]`` (default split ``forget_level2``, the QA probes).

    ``tofu:<split>`` may select authors of the split with ``tofu:<split>[a:b]`` (authors a..b−1,
    20 QA each, e.g. ``tofu:full[0:4]``). A path that exists always wins over a shorthand.
    """
    s = str(spec)
    prefix, sep, rest = s.partition(":")
    if sep and prefix in ("tofu", "rwku") and not os.path.exists(s):
        if prefix == "tofu":
            from .tofu import TOFU_QA_PER_AUTHOR, load_tofu

            split, sl = rest, None
            if "[" in rest and rest.endswith("]"):
                split, _, rng = rest[:-1].partition("[")
                a, colon, b = rng.partition(":")
                try:
                    lo, hi = int(a or 0), int(b) if b else None
                except ValueError:
                    raise DataError(f"{s}: author range must look like [a:b] with integers") from None
                if not colon:
                    hi = lo + 1
                sl = (lo, hi)
            recs = load_tofu(split, tofu_source or default_tofu_source())
            if sl is not None:
                lo, hi = sl
                recs = recs[lo * TOFU_QA_PER_AUTHOR: None if hi is None else hi * TOFU_QA_PER_AUTHOR]
                if not recs:
                    raise DataError(f"{s}: no authors in that range")
            return recs
        from .rwku import load_rwku

        target, _, split = rest.partition(":")
        items = load_rwku(target, split or "forget_level2", rwku_source or default_rwku_source())
        recs = [i for i in items if isinstance(i, QARecord)]
        if not recs:
            raise DataError(f"{s}: split has no question/answer items")
        return recs
    from .readers import read_records

    return read_records(spec)
