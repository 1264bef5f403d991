"""TOFU (Maini et al., 2024): 200 fictitious authors x 20 QA pairs, from the hub or a local folder.

Both sources go through the same code: the split is resolved to a :class:`RowTable` (hub:
``datasets.load_dataset("locuslab/TOFU", split_name, split="train")``; local: the folder's
``<split>.jsonl`` or ``<split>.json`` read by :func:`read_rows`), then one conversion turns rows
into :class:`QARecord` s.

``subject`` is ``tofu_author_<k>``: TOFU lists each author's 20 questions consecutively, the
forget splits are the last authors of ``full`` and the retain splits (and ``retain_perturbed``)
its first ones, so ``k = (offset + row) // 20`` with ``offset = 4000 - len(split)`` for
``forget*`` and 0 for ``full`` / ``retain*``. ``holdout*`` are other fictitious authors
(``tofu_holdout_author_<k>``, ``k = row // 20``); ``real_authors`` and ``world_facts`` have no
subject.
"""

from __future__ import annotations

import os
from pathlib import Path

from .readers import (RowTable, is_local_source, load_hub_rows, local_split_file, read_prompts, read_rows,
                      records_from_rows)
from .records import DataError, QARecord

TOFU_HUB = "locuslab/TOFU"
TOFU_FULL_SIZE = 4000
TOFU_QA_PER_AUTHOR = 20
TOFU_SPLITS = (
    "full",
    "forget01", "forget05", "forget10",
    "retain90", "retain95", "retain99",
    "holdout01", "holdout05", "holdout10",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
    "real_authors", "real_authors_perturbed",
    "world_facts", "world_facts_perturbed",
)
TOFU_FORGET_SPLITS = ("forget01", "forget05", "forget10")
_LOCAL_HINT = "source='../shared/data/tofu' (a folder holding <split>.jsonl or <split>.json files)"


def _check_split(split: str) -> None:
    if split not in TOFU_SPLITS:
        raise DataError(f"unknown TOFU split {split!r}; allowed: {', '.join(TOFU_SPLITS)}")


def tofu_rows(split: str, source: str | os.PathLike = TOFU_HUB) -> RowTable:
    """Resolve one TOFU split to its raw rows, from the hub (dataset id) or a local folder."""
    _check_split(split)
    if is_local_source(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise DataError("expected a folder holding TOFU's <split>.jsonl / <split>.json files", source=str(source))
        return read_rows(local_split_file(folder, split, what="TOFU"))
    return load_hub_rows(str(source), split, "train", what=f"TOFU split {split!r}", local_hint=_LOCAL_HINT)


def _author_offset(split: str, n: int) -> int | None:
    """Index in ``full`` of the split's first row (None when the split is not a slice of ``full``)."""
    if split.startswith("forget"):
        return TOFU_FULL_SIZE - n
    if split == "full" or split.startswith("retain"):
        return 0
    return None


def tofu_records_from_rows(table: RowTable, split: str) -> list[QARecord]:
    """Convert TOFU rows of ``split`` to records: subject, id, perturbed answers, options.

    ``perturbed_answer`` (a list) becomes ``perturbed_answers``; ``paraphrased_question`` and
    other extra fields stay in ``meta``; ``option1..4`` of ``real_authors`` / ``world_facts``
    become ``meta["options"]`` (with ``meta["answer_index"]``, the 0-based index of the answer).
    """
    _check_split(split)
    records = records_from_rows(table)
    n = len(records)
    offset = _author_offset(split, n)
    for i, rec in enumerate(records):
        rec.id = f"tofu/{split}/{i}"
        rec.meta["split"] = split
        if offset is not None:
            k = (offset + i) // TOFU_QA_PER_AUTHOR
            rec.subject = f"tofu_author_{k}"
            rec.meta["author_index"] = k
        elif split.startswith("holdout"):
            k = i // TOFU_QA_PER_AUTHOR
            rec.subject = f"tofu_holdout_author_{k}"
            rec.meta["author_index"] = k
        opts = [rec.meta.pop(f"option{j}") for j in range(1, 10) if f"option{j}" in rec.meta]
        if opts:
            rec.meta["options"] = opts
            if rec.answer in opts:
                rec.meta["answer_index"] = opts.index(rec.answer)
    return records


def load_tofu(split: str, source: str | os.PathLike = TOFU_HUB) -> list[QARecord]:
    """Load one TOFU split as :class:`QARecord` s.

    ``split`` is one of :data:`TOFU_SPLITS`; ``source`` is a hub dataset id (default
    ``locuslab/TOFU``, whose config names are the split names) or a local folder holding
    ``<split>.jsonl`` / ``<split>.json``. ``forget10`` has 400 records, ``retain90`` 3600.
    Raises :class:`DataError` on an unknown split, a missing file, bad rows, or an unreachable hub
    (the message names the dataset and suggests a local folder).
    """
    return tofu_records_from_rows(tofu_rows(split, source), split)


def load_tofu_idk(source: str | os.PathLike = TOFU_HUB) -> list[str]:
    """TOFU's "I don't know" responses (used by IdkNLL / IdkDPO), one string per entry.

    Local: ``idontknow.txt`` (one per line) or ``idontknow.jsonl`` in the folder (or the file
    itself). Hub: the file is downloaded with ``huggingface_hub`` when the dataset repository
    carries it; ``locuslab/TOFU`` on the hub does not (it lives in TOFU's GitHub repository as
    ``data/idontknow.jsonl``), so the error then says to pass a local folder.
    """
    names = ("idontknow.txt", "idontknow.jsonl")
    if is_local_source(source):
        p = Path(source).expanduser()
        if p.is_dir():
            found = [p / n for n in names if (p / n).is_file()]
            if not found:
                raise DataError(f"no {' or '.join(names)} in this folder", source=str(p))
            p = found[0]
        return read_prompts(p)
    from huggingface_hub import hf_hub_download

    errors = []
    for n in names:
        try:
            return read_prompts(hf_hub_download(str(source), n, repo_type="dataset"))
        except DataError:
            raise
        except Exception as e:  # not found, offline, no network
            errors.append(f"{n}: {type(e).__name__}: {e}")
    raise DataError(f"could not get TOFU's 'I don't know' responses from the Hugging Face hub dataset {source!r} "
                    f"({'; '.join(errors)}). Pass a local folder holding idontknow.txt instead, e.g. {_LOCAL_HINT}")


def tofu_eval_splits(forget_split: str) -> dict[str, str]:
    """The TOFU splits that evaluate an unlearning run on ``forget_split`` (forget01/05/10).

    Returns ``{"forget", "forget_perturbed", "retain", "retain_perturbed", "real_authors",
    "world_facts", "holdout"}`` -> split name, e.g. forget01 -> forget01_perturbed,
    retain99, retain_perturbed, real_authors_perturbed, world_facts_perturbed, holdout01.
    """
    base = forget_split.removesuffix("_perturbed")
    if base not in TOFU_FORGET_SPLITS:
        raise DataError(f"unknown TOFU forget split {forget_split!r}; allowed: {', '.join(TOFU_FORGET_SPLITS)}")
    pct = int(base[len("forget"):])
    return {
        "forget": base,
        "forget_perturbed": f"{base}_perturbed",
        "retain": f"retain{100 - pct}",
        "retain_perturbed": "retain_perturbed",
        "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed",
        "holdout": f"holdout{pct:02d}",
    }
