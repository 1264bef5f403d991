"""Where data comes from: ``tofu:<split>`` / ``rwku:<target>`` shorthands, files, and defaults.

The same spec strings work in ``obliviate train``, ``obliviate augment`` and ``obliviate run``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from .records import DataError, QARecord, text_record

log = logging.getLogger(__name__)

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


#: what ``rwku:<target>`` means when no split is named, by purpose
RWKU_DEFAULT_SPLIT = {"train": "passage", "eval": "forget_level2"}
#: RWKU splits that are training data (the forget corpus); every other split is an evaluation set
RWKU_TRAIN_SPLITS = ("passage",)
PURPOSES = ("train", "eval")


class EvalProbeWarning(UserWarning):
    """Training data was read from an evaluation split (allowed explicitly with ``allow_eval_probes``)."""


def resolve_records(spec: str | os.PathLike, *, tofu_source: str | None = None,
                    rwku_source: str | None = None, purpose: str = "train",
                    allow_eval_probes: bool = False) -> list[QARecord]:
    """Records for a data spec: a file / saved dataset (``read_records``), ``tofu:<split>`` or
    ``rwku:<target>[:<split>]``.

    ``tofu:<split>`` may select authors of the split with ``tofu:<split>[a:b]`` (authors a..b−1,
    20 QA each, e.g. ``tofu:full[0:4]``). A path that exists always wins over a shorthand.

    ``purpose`` says what the records are for. ``"train"`` (the default): ``rwku:<target>`` is
    the target's forget corpus ``passage`` (plain-text records, :func:`~obliviate.data.records.text_record`:
    no chat template, loss on every token, as RWKU trains GA / NPO); an RWKU evaluation split
    (``forget_level1/2/3``, ``neighbor_level1/2``, the MIA and utility sets) is refused with a
    :class:`DataError`, since training on it trains on the test set, unless ``allow_eval_probes``
    is true, which also emits an :class:`EvalProbeWarning` (and a logged warning). ``"eval"``:
    ``rwku:<target>`` is the Forget-QA probes ``forget_level2`` and every split is allowed.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {list(PURPOSES)}, got {purpose!r}")
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
        return _rwku_records(s, rest, rwku_source, purpose, allow_eval_probes)
    from .readers import read_records

    return read_records(spec)


def _rwku_records(spec: str, rest: str, rwku_source: str | None, purpose: str,
                  allow_eval_probes: bool) -> list[QARecord]:
    """``rwku:<target>[:<split>]`` → records (see :func:`resolve_records` for the training guard)."""
    from .rwku import RWKU_SPLITS, RWKU_TEXT_SPLITS, TextItem, load_rwku

    target, _, split = rest.partition(":")
    split = split or RWKU_DEFAULT_SPLIT[purpose]
    if split not in RWKU_SPLITS:
        raise DataError(f"{spec}: unknown RWKU split {split!r}; allowed: {', '.join(RWKU_SPLITS)}")
    if purpose == "train" and split not in RWKU_TRAIN_SPLITS:
        msg = (f"{spec}: RWKU's {split!r} is an evaluation split; training on it trains on the test set")
        if not allow_eval_probes:
            raise DataError(f"{msg}. Train on the forget corpus (rwku:{target}:passage, GA / GradDiff / NPO), on "
                            "questions generated about the target with refusals (obliviate augment rwku-rt), or, "
                            "knowingly, pass --allow-eval-probes (allow_eval_probes=True)")
        warnings.warn(msg + " (allowed explicitly)", EvalProbeWarning, stacklevel=3)
        log.warning("%s (allowed explicitly with allow_eval_probes)", msg)
    items = load_rwku(target, split, rwku_source or default_rwku_source())
    if split in RWKU_TEXT_SPLITS:
        return [text_record(i.text, subject=i.subject, id=i.id, meta=dict(i.meta))
                for i in items if isinstance(i, TextItem)]
    recs = [i for i in items if isinstance(i, QARecord)]
    if not recs:
        raise DataError(f"{spec}: split has no question/answer items")
    return recs
